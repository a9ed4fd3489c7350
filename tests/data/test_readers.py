"""Each reader on its format: small hand-written fixtures (tests/fixtures) and the real files of ../shared/data."""

import math

import pytest

from data_helpers import FIXTURES, column, sequences


def fixture(fmt, folder, *overrides):
    return [f"data.format={fmt}", f"data.path={FIXTURES / folder}", "data.name=fixture", *overrides]


def test_amazon2014_reviews_and_python_literal_metadata(prepare_in):
    data = prepare_in(*fixture("amazon2014", "amazon2014"))
    assert sequences(data) == [[2, 3, 1], [4, 2, 1], [3, 1, 5]]  # by time; equal times keep file order
    assert data.sequences.column("timestamps")[0].as_py() == [1300000100, 1300000200, 1300000300]
    assert column(data, "raw_id") == ["A001", "A002", "A003", "A004", "A005"]
    assert column(data, "title")[:2] == ["Wooden Train Set", "Kid's Puzzle, 100 pieces"]
    assert column(data, "title")[4] is None  # reviewed but no metadata line: kept, fields missing
    assert column(data, "brand") == [1, 2, 0, 1, 0]
    assert column(data, "categories")[0] == "Toys & Games > Trains > Wooden Trains"
    assert column(data, "category_3") == [1, 0, 0, 2, 0]
    assert column(data, "category_2")[0] == column(data, "category_2")[3]  # same 'Trains' node
    assert column(data, "price")[:3] == [24.99, 9.5, None]
    assert data.fields["brand"] == "categorical" and data.fields["price"] == "numeric"
    assert data.vocabulary("brand")[1] == "Woodco"
    texts = data.item_texts(["title", "brand", "categories", "price"])
    assert texts[0] == "Wooden Train Set. Woodco. Toys & Games > Trains > Wooden Trains. 24.99"
    assert texts[4] == ""  # no metadata at all


def test_amazon2014_min_rating(prepare_in):
    data = prepare_in(*fixture("amazon2014", "amazon2014", "data.min_rating=4"))
    assert data.stats["filtered"]["below_min_rating"] == 3
    assert column(data, "raw_id") == ["A001", "A002", "A005"]
    assert sequences(data) == [[2, 1], [2, 1], [1, 3]]


def test_amazon2023_parent_asins_and_millisecond_times(prepare_in):
    data = prepare_in(*fixture("amazon2023", "amazon2023"))
    assert column(data, "raw_id") == ["P001", "P002", "P003"]
    assert sequences(data) == [[2, 1, 3], [1, 3, 2]]
    assert data.sequences.column("timestamps")[0].as_py() == [1588615850, 1588615855, 1588615860]
    assert column(data, "price") == [19.99, None, 25.0]
    assert data.vocabulary("brand")[1:] == ["BlockCo", "Tunes", "MatWorld"]
    assert column(data, "categories")[1] == "Toys & Games"  # empty path -> main_category
    assert column(data, "description")[0] == "Classic stacking blocks."


def test_lcrec_json(prepare_in):
    data = prepare_in(*fixture("lcrec", "lcrec"))
    assert sequences(data) == [[1, 2, 3, 4], [2, 3, 5], [4, 1, 3, 5, 2]]
    assert column(data, "categories")[1] == "Toys & Games > Puzzles"
    assert column(data, "brand") == [1, 2, 0, 1, 3]


def test_recbole_atomic_files(prepare_in):
    data = prepare_in(*fixture("recbole", "recbole"))
    assert sequences(data) == [[2, 1, 3], [2, 3, 4], [4, 1, 2]]
    assert data.sequences.column("timestamps")[0].as_py() == [900, 1000, 1100]
    assert column(data, "title")[0] == "Wooden Train Set"
    assert column(data, "price") == [24.99, 9.5, None, 12.0]


def test_movielens_1m_dat(prepare_in):
    data = prepare_in(*fixture("movielens", "ml1m"))
    assert sequences(data) == [[2, 3, 1], [2, 4, 1], [3, 1, 4]]
    assert column(data, "title")[3] == "Se\u00e9n (1995)"  # latin-1
    assert column(data, "year") == [1995.0] * 4
    assert data.vocabulary("genres")[1:4] == ["Animation", "Children's", "Comedy"]


def test_movielens_100k_u_data(prepare_in):
    data = prepare_in(*fixture("movielens", "ml100k", "data.min_rating=3"))
    assert sequences(data) == [[2, 1, 3], [2, 1], [1, 2]]
    names = data.vocabulary("genres")
    assert [names[g] for g in column(data, "genres")[1]] == ["Action", "Adventure", "Thriller"]


def test_table_csv_with_column_mapping(prepare_in):
    data = prepare_in(*fixture("table", "table/interactions.csv", "data.columns.user=user", "data.columns.item=item",
                               "data.columns.timestamp=ts", "data.columns.rating=stars",
                               f"+data.files.items={FIXTURES / 'table/items.csv'}"))
    assert sequences(data) == [[2, 1], [2, 3, 1], [3, 1, 2]]
    assert data.sequences.column("valid_pos").to_pylist() == [-1, 1, 1]  # < 3 items: training only
    assert data.fields == {"title": "text", "price": "numeric", "color": "text"}


def test_table_parquet_without_timestamps(prepare_in, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"u": [3, 3, 3, 1, 1, 1], "i": [7, 8, 9, 9, 8, 7]}), tmp_path / "log.parquet")
    data = prepare_in(*fixture("table", tmp_path / "log.parquet", "data.columns.user=u", "data.columns.item=i",
                               "data.columns.timestamp=null"))
    assert sequences(data) == [[3, 2, 1], [1, 2, 3]]  # users by id, file order kept
    assert "timestamps" not in data.sequences.column_names


# ---------------------------------------------------------------- real data: readers agree, published counts


def maps(data, name):
    import pyarrow.parquet as pq

    return pq.read_table(data.directory / "maps" / name).to_pydict()


def assert_same_dataset(a, b):
    assert (a.num_users, a.num_items, a.stats["interactions"]) == (b.num_users, b.num_items, b.stats["interactions"])
    users_a, users_b = maps(a, "users"), maps(b, "users")
    # the same users: by the source's user id, or (UniSRec, 0-based indices) by the original user id
    assert users_a["source_id"] == users_b["source_id"] or users_a["raw_user_id"] == users_b["raw_user_id"]
    assert sequences(a) == sequences(b)


@pytest.mark.parametrize("raw,normalised,counts", [
    ("beauty_s3rec", "beauty", (22_363, 12_101, 198_502)),
    ("lastfm_s3rec", "lastfm", (1_090, 3_646, 52_551)),
    ("ml100k_recbole", "ml100k", (943, 1_682, 100_000)),
    ("scientific_unisrec", "scientific", (2_928, 1_585, 19_712)),
    pytest.param("toys_s3rec", "toys", (19_412, 11_924, 167_597), marks=pytest.mark.slow),
    pytest.param("sports_s3rec", "sports", (35_598, 18_357, 296_337), marks=pytest.mark.slow),
    pytest.param("yelp_s3rec", "yelp", (30_431, 20_033, 316_354), marks=pytest.mark.slow),
    pytest.param("games_sasrec", "games", (31_013, 23_715, 287_107), marks=pytest.mark.slow),
    pytest.param("ml1m_raw", "ml1m", (6_040, 3_706, 1_000_209), marks=pytest.mark.slow),
])
def test_raw_reader_agrees_with_normalised_and_published_counts(prepare_in, data_root, raw, normalised, counts):
    a, b = prepare_in(f"data={raw}"), prepare_in(f"data={normalised}")
    assert (a.num_users, a.num_items, a.stats["interactions"]) == counts
    assert_same_dataset(a, b)


def test_s3rec_attributes_match_normalised(prepare_in, data_root):
    a, b = prepare_in("data=beauty_s3rec"), prepare_in("data=beauty")
    names_a, names_b = a.vocabulary("attributes"), b.vocabulary("attributes")
    decoded = [[[names[i] for i in ids] for ids in column(d, "attributes")] for d, names in ((a, names_a), (b, names_b))]
    assert decoded[0] == decoded[1]


def test_ml100k_real_timestamps_and_ratings(prepare_in, data_root):
    data = prepare_in("data=ml100k_recbole", "data.min_rating=4")
    assert data.stats["filtered"]["below_min_rating"] == 100_000 - data.stats["interactions"]
    ts = data.sequences.column("timestamps").to_pylist()
    assert all(t == sorted(t) for t in ts)
    assert data.vocabulary("genres")[1] == "Animation"
    assert not math.isnan(data.stats["sequence_length"]["mean"])
