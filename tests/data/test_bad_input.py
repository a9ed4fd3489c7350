"""Bad input: each case is a DataError naming the file, line or key and the fix; with
data.on_error=skip the bad rows are dropped and counted per reason in stats.json, never lost silently."""

import subprocess
import sys

import pytest
from data_helpers import FIXTURES, normalised, sequences, write_jsonl

from distrec.errors import ConfigError, DataError

GOOD = [{"user_id": 1, "items": [1, 2, 3]}, {"user_id": 2, "items": [2, 3, 1, 2]}]
ITEMS = [{"item_id": i, "raw_id": f"r{i}", "title": f"item {i}"} for i in (1, 2, 3)]


def expect_error(prepare_in, overrides, *fragments):
    with pytest.raises(DataError) as info:
        prepare_in(*overrides)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_malformed_line(prepare_in, tmp_path):
    overrides = normalised(tmp_path, [GOOD[0], '{"user_id": 3, "items": [1, 2', GOOD[1]])
    message = expect_error(prepare_in, overrides, "sequences.jsonl, line 2", "not valid JSON")
    assert "on_error=skip" in message  # the fix is named
    data = prepare_in(*overrides, "data.on_error=skip")
    assert data.stats["dropped"] == {"malformed_line": 1}
    assert data.stats["interactions"] == 7


def test_missing_required_field(prepare_in, tmp_path):
    overrides = normalised(tmp_path, [GOOD[0], {"user_id": 3, "timestamps": [1]}, GOOD[1]])
    expect_error(prepare_in, overrides, "line 2", "required field 'items' is missing")
    assert prepare_in(*overrides, "data.on_error=skip").stats["dropped"] == {"missing_field": 1}


def test_unknown_item_in_a_sequence(prepare_in, tmp_path):
    overrides = normalised(tmp_path, [GOOD[0], {"user_id": 2, "items": [2, 9, 3, 1]}], ITEMS)
    expect_error(prepare_in, overrides, "sequences.jsonl, line 2", "item id '9' is not in the item file")
    data = prepare_in(*overrides, "data.on_error=skip")
    assert data.stats["dropped"] == {"unknown_item": 1}
    assert data.sequences.column("items")[1].as_py() == [2, 3, 1]


def test_empty_file_is_an_error_even_when_skipping(prepare_in, tmp_path):
    overrides = normalised(tmp_path, [])
    expect_error(prepare_in, overrides, "sequences.jsonl", "file is empty")
    expect_error(prepare_in, [*overrides, "data.on_error=skip"], "file is empty")


def test_duplicate_ids(prepare_in, tmp_path):
    overrides = normalised(tmp_path / "items", GOOD, [*ITEMS, ITEMS[0]])
    expect_error(prepare_in, overrides, "items.jsonl, line 4", "item_id 1 appears twice")
    data = prepare_in(*overrides, "data.on_error=skip")
    assert data.stats["dropped"] == {"duplicate_item": 1}
    assert data.items.column("title").to_pylist() == ["item 1", "item 2", "item 3"]  # the first one is kept

    overrides = normalised(tmp_path / "users", [*GOOD, GOOD[0]])
    expect_error(prepare_in, overrides, "line 3", "user_id 1 appears twice")
    assert prepare_in(*overrides, "data.on_error=skip").stats["dropped"] == {"duplicate_user": 1}


def test_non_existent_path(prepare_in, tmp_path):
    expect_error(prepare_in, ["data.format=normalized", f"data.path={tmp_path / 'nope'}"],
                 str(tmp_path / "nope"), "dataset folder not found", "data.path")
    expect_error(prepare_in, ["data.format=normalized", f"data.path={tmp_path}"], "sequences file not found")


def test_skip_counts_every_dropped_row(prepare_in, tmp_path):
    rows = [GOOD[0], "not json", {"user_id": 5}, {"user_id": 6, "items": "oops"}, GOOD[1], GOOD[0],
            {"user_id": 7, "items": []}, {"user_id": 8, "items": [1, 2], "timestamps": [1, "x"]}]
    data = prepare_in(*normalised(tmp_path, rows), "data.on_error=skip")
    assert data.stats["dropped"] == {"malformed_line": 3, "missing_field": 1, "duplicate_user": 1,
                                     "empty_sequence": 1}
    assert sum(data.stats["dropped"].values()) + data.num_users == len(rows)


def test_other_formats_name_file_and_line(prepare_in, tmp_path):
    s3rec = tmp_path / "s3rec"
    s3rec.mkdir()
    (s3rec / "X.txt").write_text("1 1 2 3\n2\n")
    expect_error(prepare_in, ["data.format=s3rec", f"data.path={s3rec}"], "X.txt, line 2", "at least one item")

    recbole = tmp_path / "recbole"
    recbole.mkdir()
    (recbole / "x.inter").write_text("user_id\titem_id\n1\t2\n")
    expect_error(prepare_in, ["data.format=recbole", f"data.path={recbole}"], "x.inter, line 1", "name:type")

    expect_error(prepare_in, ["data.format=table", f"data.path={FIXTURES / 'table/interactions.csv'}"],
                 "interactions.csv", "no column 'user_id'", "data.columns.user")

    amazon = tmp_path / "amazon"
    write_jsonl(amazon / "reviews_X_5.json", ['{"reviewerID": "a", "asin": "b", "unixReviewTime": 1}',
                                              "{'reviewerID': 'a', 'asin':"])
    expect_error(prepare_in, ["data.format=amazon2014", f"data.path={amazon}"], "reviews_X_5.json, line 2",
                 "neither JSON nor a Python dict literal")


def test_blank_user_or_item_cells_are_refused_or_counted_alike_in_csv_and_parquet(prepare_in, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # rows 2 and 4 have a blank user / item cell: a CSV reads them as "", parquet holds nulls
    users, items = ["a", "", "a", "b", "b", "b"], ["x", "y", "y", " ", "x", "y"]
    (tmp_path / "log.csv").write_text("u,i\n" + "".join(f"{u},{i}\n" for u, i in zip(users, items)))
    pq.write_table(pa.table({"u": [u.strip() or None for u in users], "i": [i.strip() or None for i in items]}),
                   tmp_path / "log.parquet")
    for name in ("log.csv", "log.parquet"):
        overrides = ["data.format=table", f"data.path={tmp_path / name}", "data.columns.user=u", "data.columns.item=i",
                     "data.columns.timestamp=null"]
        line = 3 if name == "log.csv" else 2  # CSV: the file's line (after the header); parquet: the row
        expect_error(prepare_in, overrides, f"{name}, line {line}", "empty user (column 'u')", "on_error=skip")
        data = prepare_in(*overrides, "data.on_error=skip")
        assert data.stats["dropped"] == {"missing_field": 2}, name
        assert data.num_users == 2 and data.num_items == 2, name  # no phantom user "" or item ""
        assert sequences(data) == [[1, 2], [1, 2]], name


def test_config_errors(prepare_in, tmp_path):
    overrides = normalised(tmp_path, GOOD)
    with pytest.raises(ConfigError, match="on_error"):
        prepare_in(*overrides, "data.on_error=ignore")
    with pytest.raises(ConfigError, match="temporal needs timestamps"):
        prepare_in(*overrides, "data.split=temporal")
    with pytest.raises(ConfigError, match="has no ratings"):
        prepare_in(*overrides, "data.min_rating=3")
    with pytest.raises(ConfigError, match=r"data.split: Invalid value 'random', expected one of \[leave_one_out, temporal\]"):
        prepare_in(*overrides, "data.split=random")
    with pytest.raises(ConfigError, match="data.format='bogus'"):
        prepare_in(*overrides, "data.format=bogus")


def test_cli_reports_the_error_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "distrec", "prepare", "data=beauty", f"data.path={tmp_path}/missing",
                             f"paths.root={tmp_path}"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "dataset folder not found" in result.stderr and "Traceback" not in result.stderr
