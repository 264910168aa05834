"""The UI shows a check as `<asset> / <check>`: a check's name says what it checks without its asset."""

from sigma_assets.definitions import defs


def test_check_names_do_not_repeat_their_asset() -> None:
    keys = defs.get_repository_def().asset_graph.asset_check_keys
    assert len(keys) == 9
    for key in keys:
        asset_words = set(key.asset_key.path[-1].split("_"))
        assert not asset_words & set(key.name.split("_")), f"{key.asset_key.to_user_string()} / {key.name}"
