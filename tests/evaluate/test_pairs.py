import numpy as np
import pytest

from aikd.evaluate.pairs import PairsError, build_pairs, read_pairs


def test_built_pairs_are_all_mated_pairs_and_seeded_non_mated_ones():
    subjects = np.array(["a", "b", "a", "c", "a", "b"])
    pairs = build_pairs(subjects, non_mated=50, seed=3)
    mated = {tuple(sorted(p)) for p in zip(pairs.a[pairs.mated], pairs.b[pairs.mated], strict=True)}
    assert mated == {(0, 2), (0, 4), (2, 4), (1, 5)}
    assert (~pairs.mated).sum() == 50
    assert np.all(subjects[pairs.a[~pairs.mated]] != subjects[pairs.b[~pairs.mated]])
    again = build_pairs(subjects, non_mated=50, seed=3)
    np.testing.assert_array_equal(pairs.a, again.a)
    assert build_pairs(subjects, max_mated=2, non_mated=5).n_mated == 2


def test_lfw_and_csv_pairs_files(tmp_path):
    ids = ["Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg", "Bob/Bob_0001.jpg"]
    (tmp_path / "pairs.txt").write_text("1 1\nAnn 1 2\nAnn 1 Bob 1\n")
    p = read_pairs(str(tmp_path / "pairs.txt"), ids)
    assert p.a.tolist() == [0, 0] and p.b.tolist() == [1, 2] and p.mated.tolist() == [True, False]
    (tmp_path / "pairs.csv").write_text("image_id_a,image_id_b,mated\nAnn/Ann_0002.jpg,Bob/Bob_0001.jpg,0\n")
    q = read_pairs(str(tmp_path / "pairs.csv"), ids)
    assert q.a.tolist() == [1] and q.mated.tolist() == [False]


def test_a_pairs_file_with_an_unknown_image_id_is_a_clear_error(tmp_path):
    (tmp_path / "pairs.csv").write_text("image_id_a,image_id_b,mated\nx.jpg,y.jpg,1\n")
    with pytest.raises(PairsError, match=r"pairs.csv pair 1: image_id 'x.jpg' is not in the face set"):
        read_pairs(str(tmp_path / "pairs.csv"), ["a.jpg"])
    with pytest.raises(PairsError, match="needs columns"):
        (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
        read_pairs(str(tmp_path / "bad.csv"), ["a.jpg"])
