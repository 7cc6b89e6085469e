"""The benchmark's pristine datasets (tools/bench/datasets.py): built once, reused while they
match their stamp, and rebuilt when the tree no longer does, so no row is ever timed on
less data than the table reports."""

from tools.bench import datasets

TINY = datasets.Scale("tiny", large_files=3, large_file_size=4096, many_files=20, many_dirs=2,
                      scale_files=10, scale_dirs=2, scale_point_dirs=1)


def test_a_stamped_dataset_is_reused_untouched(tmp_path):
    said = []
    first = datasets.ensure_dataset(tmp_path, "many", TINY, said.append)
    assert (first["file_count"], first["bytes"]) == datasets.tree_totals(tmp_path / "many")
    assert first["file_count"] == 20
    marker = tmp_path / "many" / "untouched"  # a rebuild would remove it
    marker.mkdir()
    said.clear()
    assert datasets.ensure_dataset(tmp_path, "many", TINY, said.append) == first
    assert marker.is_dir() and said == []


def test_a_dataset_that_lost_a_file_or_bytes_is_rebuilt(tmp_path):
    stamp = datasets.ensure_dataset(tmp_path, "large", TINY, lambda _: None)
    files = sorted((tmp_path / "large").rglob("*.bin"))
    for damage in (lambda: files[0].unlink(), lambda: files[1].write_bytes(b"short")):
        damage()
        said = []
        again = datasets.ensure_dataset(tmp_path, "large", TINY, said.append)
        assert any("no longer matches its stamp" in line for line in said), said
        assert datasets.tree_totals(tmp_path / "large") == (stamp["file_count"], stamp["bytes"])
        assert (again["file_count"], again["bytes"]) == (stamp["file_count"], stamp["bytes"])
        files = sorted((tmp_path / "large").rglob("*.bin"))
