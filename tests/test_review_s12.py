"""Twelfth-session review fixes that stand alone (each test failed before its fix)."""
from backend.specs import MergeSpec


def test_merges_that_differ_only_in_a_setting_the_tag_does_not_spell_get_different_default_names():
    """Two SLERP schedules were both "a_b-slerpsched", and filters, lambda, DARE's seed or dtype were not in the name
    at all, so the second such merge was refused as a taken name although it makes other weights."""
    variants = [MergeSpec(models=["a", "b"], method="slerp", t=[0, 1]),
                MergeSpec(models=["a", "b"], method="slerp", t=[1, 0]),
                MergeSpec(models=["a", "b"], method="slerp", filters={"mlp": [0, 1]}),
                MergeSpec(models=["a", "b"], method="slerp"),
                MergeSpec(models=["a", "b"], method="dare_ties", base="c"),
                MergeSpec(models=["a", "b"], method="dare_ties", base="c", seed=1),
                MergeSpec(models=["a", "b"], method="ties", base="c", **{"lambda": 0.5}),
                MergeSpec(models=["a", "b"], method="ties", base="c"),
                MergeSpec(models=["a", "b"], dtype="bfloat16"),
                MergeSpec(models=["a", "b"])]
    names = [v.default_name() for v in variants]
    assert len(set(names)) == len(names), names
    # the plain merges keep their short, readable names; a setting that is irrelevant to the method adds nothing
    assert names[3] == "a_b-slerp0.5" and names[7] == "a_b-ties-d0.5" and names[9] == "a_b-average"
    assert MergeSpec(models=["a", "b"], seed=7).default_name() == "a_b-average"
    assert MergeSpec(models=["a", "b"], method="slerp", t=[0, 1]).default_name() == names[0]  # stable


def test_a_setting_spelled_as_its_methods_default_does_not_change_the_name():
    """The page sends normalize=True for an average (mergekit's default for it): the same merge, the same name."""
    assert MergeSpec(models=["a", "b"], normalize=True).default_name() == "a_b-average"
    assert MergeSpec(models=["a", "b"], method="ties", base="c", rescale=False).default_name() == "a_b-ties-d0.5"
    assert MergeSpec(models=["a", "b"], normalize=False).default_name() != "a_b-average"
