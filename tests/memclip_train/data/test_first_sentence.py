import pytest

from memclip_train.data.captions import first_sentence


@pytest.mark.parametrize("caption, expected", [
    ("A red star. A blue ring.", "A red star."),
    ("A photo by Dr. Smith of St. Mary's church. It is old.", "A photo by Dr. Smith of St. Mary's church."),
    ("Objects, e.g. cups and plates, sit on a table. Nothing else.", "Objects, e.g. cups and plates, sit on a table."),
    ("A poster of J. R. R. Tolkien hangs here! The wall is white.", "A poster of J. R. R. Tolkien hangs here!"),
    ("Made in the U.S.A. in 1990? Maybe.", "Made in the U.S.A. in 1990?"),
    ("no period at all", "no period at all"),
    ("  leading space and trailing  ", "leading space and trailing"),
    ("First line without period\nSecond line. Third.", "First line without period"),
    ("\n\nThe image shows a dog.\nIt runs.", "The image shows a dog."),
    ("The price is 3.50 dollars. Cheap.", "The price is 3.50 dollars."),
    ("He said \"stop.\" Then left.", "He said \"stop.\""),
    ("", ""),
])
def test_first_sentence(caption, expected):
    assert first_sentence(caption) == expected
