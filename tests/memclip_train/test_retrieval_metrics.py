import pytest
import torch

from memclip_train.retrieval_metrics import query_ranks, retrieval_metrics


def one_hot(n, d=None):
    return torch.eye(n, d or n)


def test_perfect_embeddings_give_full_recall_and_rank_one():
    images = one_hot(4)
    texts = torch.cat([one_hot(4), one_hot(4)])  # two captions per image
    result = retrieval_metrics(images, texts, torch.arange(8) % 4)
    assert result["t2i_R@1"] == result["i2t_R@1"] == 100.0
    assert result["t2i_mean_rank"] == result["i2t_median_rank"] == 1.0
    assert result["num_images"] == 4 and result["num_texts"] == 8


def test_known_ranks_several_captions_per_image():
    # Image i points along axis i. Caption 0 (image 0) points at image 1 first, then image 0: T2I rank 2.
    images = one_hot(3)
    texts = torch.tensor([
        [0.5, 1.0, 0.0],   # true image 0, rank 2
        [1.0, 0.0, 0.0],   # true image 0, rank 1
        [0.0, 0.2, 0.1],   # true image 1, rank 1
        [0.0, 0.9, 0.3],   # true image 2, rank 2
    ])
    owner = torch.tensor([0, 0, 1, 2])
    result = retrieval_metrics(images, texts, owner, ks=(1, 2))
    assert result["t2i_R@1"] == pytest.approx(50.0)
    assert result["t2i_R@2"] == pytest.approx(100.0)
    assert result["t2i_mean_rank"] == pytest.approx(1.5)
    # I2T: image 0 scores captions [0.5, 1, 0, 0] -> its caption 1 is first: hit at 1.
    # image 1 scores [1, 0, .2, .9] -> its caption 2 ranks 3rd.  image 2 scores [0, 0, .1, .3] -> caption 3 first.
    assert result["i2t_R@1"] == pytest.approx(200 / 3)
    assert result["i2t_R@2"] == pytest.approx(200 / 3)
    assert result["i2t_median_rank"] == 1.0
    assert result["i2t_mean_rank"] == pytest.approx(5 / 3)


def test_ties_count_against_the_query():
    images = torch.ones(3, 2)
    texts = torch.ones(3, 2)
    result = retrieval_metrics(images, texts, torch.arange(3))
    assert result["t2i_R@1"] == 0.0 and result["t2i_mean_rank"] == 3.0


def test_chunking_does_not_change_results():
    torch.manual_seed(0)
    images, texts = torch.randn(37, 8), torch.randn(74, 8)
    owner = torch.arange(74) % 37
    assert retrieval_metrics(images, texts, owner, chunk_size=5) == retrieval_metrics(images, texts, owner)


def test_bad_inputs():
    with pytest.raises(ValueError, match="every image needs"):
        retrieval_metrics(one_hot(3), one_hot(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(one_hot(2), one_hot(2), torch.tensor([0, 2]))


def test_nan_is_the_worst_score():
    """All-NaN features used to rank every query first (every comparison with NaN is false): R@1 100."""
    nan = torch.full((3, 2), float("nan"))
    result = retrieval_metrics(nan, nan, torch.arange(3))
    assert result["t2i_R@1"] == result["i2t_R@1"] == 0.0
    assert result["t2i_mean_rank"] == result["i2t_mean_rank"] == 3.0, "last of three, never beyond"
    # One NaN image among good ones: its own caption ranks it last; the other captions are not hurt by it.
    images = one_hot(3)
    images[1] = float("nan")
    ranks = query_ranks(images, one_hot(3), torch.arange(3))
    assert ranks["t2i"].tolist() == [1, 3, 1]
    assert ranks["i2t"].tolist() == [1, 3, 1]
