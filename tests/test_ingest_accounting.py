"""Every row accounted for: the CSV reader's malformed regions, duplicates,
trimmed ids, NaN, the delimiter and encoding options and their hints, and
the report's row accounting (rows read = accepted + rejected + duplicates +
filtered). Pure Python: no TFX or Beam here (the executor's side is in
test_ingest.py)."""

import dataclasses
import os

import pytest

from tfx_recsys import dataset_config as dc
from tfx_recsys.data import ingest, tables
from tfx_recsys.errors import DataError

NOW = 1_700_000_000
SYNTHETIC = dc.load(dc.builtin_path("synthetic"))
ITEMS_HEADER = "item_id,title,release_year,genres\n"
INTERACTIONS_HEADER = "user_id,item_id,rating,timestamp\n"


def write(directory, name, text, encoding="utf-8"):
    path = os.path.join(str(directory), name)
    with open(path, "w", encoding=encoding, newline="") as f:
        f.write(text)
    return path


def parsed(config, table, data_dir, stats=None):
    return list(ingest.parse_table(config, table, str(data_dir), now=NOW, stats=stats))


def rejects(rows):
    return [(n, r.reason) for n, r in rows if isinstance(r, ingest.Reject)]


def accepted(rows):
    return [r for _, r in rows if not isinstance(r, ingest.Reject)]


def item_rows(count, start=1):
    return "".join(f"i{n},Item {n},{1990 + n % 20},Drama\n" for n in range(start, start + count))


# --------------------------------------------------------------------------
# A quote without its closing quote


def test_a_quote_that_swallows_rows_rejects_every_line_it_spans(tmp_path):
    # The issue's case, scaled: a '"' before 60 items makes them one value.
    write(tmp_path, "items.csv", ITEMS_HEADER + item_rows(5)
          + 'i6,"Broken title,1999,Drama\n' + item_rows(60, start=7)
          + 'i67,"Closing, the quote",2001,Drama\n' + item_rows(30, start=68))
    stats = tables.ReadStats()
    rows = parsed(SYNTHETIC, "items", tmp_path, stats)
    assert len(rows) == 5 + 1 + 60 + 1 + 30       # one per physical line
    assert rejects(rows) == [(7, tables.UNBALANCED_QUOTE)] + [
        (line, tables.INSIDE_QUOTE) for line in range(8, 69)]
    assert rows[6][1].raw == "i7,Item 7,1997,Drama"   # each swallowed row is listed
    assert [r["item_id"] for r in accepted(rows)] == [f"i{n}" for n in range(1, 6)] + [
        f"i{n}" for n in range(68, 98)]
    assert stats == tables.ReadStats(header_lines=1)

    report = ingest.build_report(SYNTHETIC, [r for _, r in rows if isinstance(r, ingest.Reject)],
                                 {"items": (len(rows), 0)}, {"train": 1},
                                 {"items": len(accepted(rows))})
    assert report["tables"]["items"]["rejected"] == 62
    with pytest.raises(DataError) as error:       # 62 of 97 lines: over the 1% limit
        ingest.check_report(report, SYNTHETIC, str(tmp_path), "/out/rejected_rows.csv")
    message = str(error.value)
    assert "items.csv: 62 of 97 rows rejected" in message
    assert "row 7 (unbalanced quote" in message and "row 8 (inside a quoted value" in message
    assert "fix the quote on the first line listed" in message
    assert "\n" not in message


def test_a_quote_that_runs_to_the_end_of_the_file_rejects_every_line(tmp_path):
    write(tmp_path, "items.csv", ITEMS_HEADER + item_rows(3)
          + 'i4,"Never closed,1999,Drama\n' + item_rows(4, start=5))
    rows = parsed(SYNTHETIC, "items", tmp_path)
    assert rejects(rows) == [(5, tables.UNBALANCED_QUOTE)] + [
        (line, tables.INSIDE_QUOTE) for line in range(6, 10)]
    assert len(accepted(rows)) == 3


def test_a_swallowed_region_with_the_right_field_count_is_still_rejected(tmp_path):
    # '"x\nu2,i2,4,1001"' closes on the next line and leaves 4 fields: the
    # row inside the quote must not vanish into a title.
    write(tmp_path, "items.csv", ITEMS_HEADER + 'i1,"Title\ni2,Other,1999,Drama",1999,A\n'
          + item_rows(2, start=3))
    rows = parsed(SYNTHETIC, "items", tmp_path)
    assert rejects(rows) == [(2, tables.UNBALANCED_QUOTE), (3, tables.INSIDE_QUOTE)]
    assert [r["item_id"] for r in accepted(rows)] == ["i3", "i4"]


def test_a_quoted_value_with_a_line_break_is_one_accepted_row(tmp_path):
    stats = tables.ReadStats()
    write(tmp_path, "items.csv", ITEMS_HEADER + 'i1,"Two\nlines",2001,A|B\n\ni2,,,\n')
    rows = parsed(SYNTHETIC, "items", tmp_path, stats)
    assert [(n, r["title"]) for n, r in rows] == [(2, "Two\nlines"), (5, "")]
    assert stats == tables.ReadStats(header_lines=1, blank_lines=1, continuation_lines=1)


def test_a_stray_quote_inside_one_line_is_rejected_alone(tmp_path):
    write(tmp_path, "items.csv", ITEMS_HEADER + 'i1,"Title"s,1999,A\n' + item_rows(2, start=2))
    rows = parsed(SYNTHETIC, "items", tmp_path)
    assert rejects(rows) == [(2, tables.BAD_QUOTING)]
    assert len(accepted(rows)) == 2


def test_a_value_over_the_field_limit_is_one_line_naming_where_it_starts(tmp_path):
    write(tmp_path, "items.csv", ITEMS_HEADER + 'i1,"open,1999,A\n'
          + "i2,x,1999,A\n" * 20_000)
    with pytest.raises(DataError) as error:
        parsed(SYNTHETIC, "items", tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'items.csv'}, line 2: a quoted value runs "
                              "from line 2 past line")
    assert "without its closing quote" in message and "\n" not in message


# --------------------------------------------------------------------------
# Duplicates


def numbered(*rows):
    return [(n, {"user_id": "u1", "item_id": item, "timestamp": t, "rating": r})
            for n, (item, t, r) in rows]


def test_exact_duplicate_interactions_are_removed_and_counted():
    rows = numbered((4, ("i1", 10, 4.0)), (2, ("i1", 10, 4.0)), (3, ("i1", 10, 5.0)),
                    (5, ("i1", 11, 4.0)), (6, ("i1", 10, 4.0)))
    kept, duplicates = ingest.drop_duplicates(rows, SYNTHETIC)
    assert [n for n, _ in kept] == [2, 3, 5]        # the first row of each repeat wins
    assert [(d.row, d.reason, d.raw) for d in duplicates] == [
        (4, ingest.REASON_DUPLICATE, "same as row 2"),
        (6, ingest.REASON_DUPLICATE, "same as row 2")]
    assert all(ingest.is_duplicate(d) for d in duplicates)
    keep = dataclasses.replace(SYNTHETIC, interactions=dataclasses.replace(
        SYNTHETIC.interactions, keep_duplicates=True))
    assert ingest.drop_duplicates(rows, keep) == (sorted(rows, key=lambda p: p[0]), [])


def test_an_exact_duplicate_feature_row_is_removed_a_conflicting_one_rejected(tmp_path):
    write(tmp_path, "users.csv", "user_id,age,gender,occupation,zip_code\n"
          "u1,30,F,writer,01234\nu1,30,F,writer,01234\nu1,31,F,writer,01234\n")
    rows = parsed(SYNTHETIC, "users", tmp_path)
    assert rejects(rows) == [(3, ingest.REASON_DUPLICATE), (4, ingest.REASON_DUPLICATE_KEY)]
    report = ingest.build_report(SYNTHETIC, [r for _, r in rows[1:]],
                                 {"users": (3, 0)}, {"train": 1}, {"users": 1})
    entry = report["tables"]["users"]
    assert (entry["rows"], entry["accepted"], entry["rejected"], entry["duplicates"]) == (
        3, 1, 1, 1)
    assert report["rejected_rows"] == 1 and report["duplicates_removed"] == 1
    assert report["rejected_summary"] == {"users.csv: duplicate key": 1}
    assert "duplicate" in ingest.rejected_rows_csv([r for _, r in rows[1:]])


def test_duplicates_do_not_count_against_the_rejection_limit():
    duplicates = [ingest.Reject("interactions", "interactions.csv", n, "",
                                ingest.REASON_DUPLICATE, "same as row 2")
                  for n in range(3, 53)]
    report = ingest.build_report(SYNTHETIC, duplicates,
                                 {"interactions": (100, 0)}, {"train": 40},
                                 {"interactions": 50, "users": 0, "items": 0})
    ingest.check_accounting(report)
    ingest.check_report(report, SYNTHETIC, "/data", "/out/r.csv")   # no error


# --------------------------------------------------------------------------
# Accounting


def test_accounting_that_does_not_add_up_fails_loudly():
    report = ingest.build_report(SYNTHETIC, [], {"interactions": (10, 2)}, {"train": 7},
                                 {"interactions": 7, "users": 0, "items": 0})
    with pytest.raises(ingest.AccountingError, match=r"interactions.csv: 10 rows read, "
                       r"but 7 accepted \+ 0 rejected \+ 0 duplicates \+ 2 below "
                       r"min_rating = 9"):
        ingest.check_accounting(report)
    assert ingest.accounting(report)["interactions"] == {
        "file": "interactions.csv", "rows": 10, "accepted": 7, "rejected": 0,
        "duplicates": 0, "filtered": 2}


# --------------------------------------------------------------------------
# Values


def test_ids_are_trimmed_like_numbers(tmp_path):
    write(tmp_path, "interactions.csv", INTERACTIONS_HEADER + "1, 377 ,4, 1000\n")
    write(tmp_path, "items.csv", ITEMS_HEADER + " 377,Title,1999,A\n")
    [(_, row)] = parsed(SYNTHETIC, "interactions", tmp_path)
    assert (row["user_id"], row["item_id"], row["timestamp"]) == ("1", "377", 1000)
    [(_, item)] = parsed(SYNTHETIC, "items", tmp_path)
    assert item["item_id"] == "377"
    assert ingest.parse_id_feature(" a ") == "a"


def test_nan_means_missing_for_numeric_features(tmp_path):
    write(tmp_path, "users.csv", "user_id,age,gender,occupation,zip_code\n"
          "u1,NaN,F,writer,1\nu2,nan,M,writer,2\nu3,inf,M,writer,3\n")
    rows = parsed(SYNTHETIC, "users", tmp_path)
    assert [r["age"] for r in accepted(rows)] == [None, None]   # the users are kept
    assert rejects(rows) == [(4, ingest.REASON_NOT_FINITE)]
    assert ingest.parse_number(float("nan")) is None
    assert ingest.parse_integer("NaN") is None and ingest.parse_text(float("nan")) == ""


def test_millisecond_timestamps_get_their_own_reason_and_a_hint(tmp_path):
    write(tmp_path, "interactions.csv", INTERACTIONS_HEADER
          + "".join(f"u1,i{n},4,{1_600_000_000_000 + n}\n" for n in range(5)))
    rows = parsed(SYNTHETIC, "interactions", tmp_path)
    assert {reason for _, reason in rejects(rows)} == {ingest.REASON_TIMESTAMP_UNIT}
    report = ingest.build_report(SYNTHETIC, [r for _, r in rows], {"interactions": (5, 0)},
                                 {"train": 0})
    with pytest.raises(DataError, match="look like milliseconds: the column must hold "
                                        "seconds since the epoch"):
        ingest.check_report(report, SYNTHETIC, str(tmp_path), None)


# --------------------------------------------------------------------------
# Delimiters and encodings


def with_csv(**options):
    return dataclasses.replace(SYNTHETIC, csv=dc.Csv(**options))


def test_a_semicolon_file_read_as_csv_gets_the_delimiter_hint(tmp_path):
    write(tmp_path, "items.csv", "item_id;title;release_year;genres\ni1;T;1999;A\n")
    with pytest.raises(DataError) as error:
        parsed(SYNTHETIC, "items", tmp_path)
    message = str(error.value)
    assert "The header is one column containing ';': the file looks ';'-delimited; " \
           "set `csv: {delimiter: \";\"}` in the dataset config." in message
    assert [r["title"] for r in accepted(parsed(with_csv(delimiter=";"), "items",
                                                tmp_path))] == ["T"]


def test_a_latin1_file_is_read_with_its_configured_encoding(tmp_path):
    write(tmp_path, "items.csv", ITEMS_HEADER + "i1,Amélie,2001,A\n", encoding="latin-1")
    assert rejects(parsed(SYNTHETIC, "items", tmp_path)) == [(2, ingest.REASON_NOT_UTF8)]
    [row] = accepted(parsed(with_csv(encoding="latin-1"), "items", tmp_path))
    assert row["title"] == "Amélie"


def test_a_utf16_file_is_explained(tmp_path):
    write(tmp_path, "items.csv", ITEMS_HEADER + "i1,T,2001,A\n", encoding="utf-16")
    with pytest.raises(DataError, match="It is UTF-16 text: re-save it as UTF-8."):
        parsed(SYNTHETIC, "items", tmp_path)


def test_not_utf8_rows_over_the_limit_get_the_encoding_hint(tmp_path):
    with open(os.path.join(tmp_path, "items.csv"), "wb") as f:
        f.write(ITEMS_HEADER.encode() + b"i1,Am\xe9lie,2001,A\ni2,T,2002,B\n")
    rows = parsed(SYNTHETIC, "items", tmp_path)
    report = ingest.build_report(SYNTHETIC, [r for _, r in rows if isinstance(
        r, ingest.Reject)], {"items": (2, 0)}, {"train": 1})
    with pytest.raises(DataError, match=r"re-save it as UTF-8, or set `csv: \{encoding"):
        ingest.check_report(report, SYNTHETIC, str(tmp_path), None)
