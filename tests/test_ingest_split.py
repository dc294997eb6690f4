import json

import pytest

from clinitune.data.ingest import ingest_source
from clinitune.data.split import assign_split, hash_unit
from clinitune.errors import DataError
from clinitune.recipe import ColumnMap, SourceSpec


def _spec(**kw):
    cols = kw.pop("columns", {"note_id": "id", "patient_id": "mrn", "text": "note"})
    return SourceSpec(name="s", path="x", columns=ColumnMap(**cols), tasks=["t"], **kw)


def test_csv_embedded_newlines_bom_and_quarantine(tmp_path):
    p = tmp_path / "notes.csv"
    p.write_bytes(
        "\ufeffid,mrn,note\n"
        '1,p1,"HPI: chest pain\nPLAN: ""admit"", trend troponin"\n'
        "2,p2,\n"  # empty text
        ",p3,orphan note\n"  # missing id
        "4,,no patient\n"  # missing patient
        '5,p1,"second, note"\n'.encode()
    )
    res = ingest_source(_spec(), p)
    c = res.counts
    assert c["rows_in"] == 5 and c["kept"] == 2 and c["quarantined"] == 3
    assert c["rows_in"] == c["kept"] + c["quarantined"]
    assert c["quarantine_reasons"] == {
        "empty_text": 1,
        "missing_note_id": 1,
        "missing_patient_id": 1,
    }
    assert res.notes[0].note_id == "1" and "\n" in res.notes[0].text
    assert '"admit"' in res.notes[0].text
    assert [q["reason"] for q in res.quarantined] == [
        "empty_text",
        "missing_note_id",
        "missing_patient_id",
    ]


def test_missing_column_names_file_and_column(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("id,text\n1,hello\n")
    with pytest.raises(DataError, match=r"n\.csv: column 'note'"):
        ingest_source(_spec(), p)


def test_undecodable_bytes_name_file_not_text(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("id,mrn,note\n1,p1,caf\xe9 SECRETNAME\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        ingest_source(_spec(), p)
    assert "latin.csv" in str(e.value) and "SECRETNAME" not in str(e.value)
    res = ingest_source(_spec(encoding="latin-1"), p)
    assert res.notes[0].text.startswith("café")


def test_jsonl_bad_line_quarantined(tmp_path):
    p = tmp_path / "n.jsonl"
    p.write_text(json.dumps({"id": 1, "mrn": "a", "note": "x"}) + "\n{oops\n")
    res = ingest_source(_spec(), p)
    assert res.counts["kept"] == 1 and res.counts["quarantine_reasons"] == {"unparseable_row": 1}


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "n.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "mrn": ["1", "2"], "note": ["x", None]}), p)
    res = ingest_source(_spec(), p)
    assert res.counts == {
        "rows_in": 2,
        "kept": 1,
        "quarantined": 1,
        "quarantine_reasons": {"empty_text": 1},
    }


def test_split_is_proportional_and_salted():
    ids = [f"patient-{i}" for i in range(20000)]
    a = [assign_split(i, valid=0.1, test=0.2, salt="s") for i in ids]
    share = {s: a.count(s) / len(a) for s in ("train", "valid", "test")}
    assert abs(share["test"] - 0.2) < 0.015 and abs(share["valid"] - 0.1) < 0.015
    c = [assign_split(i, valid=0.1, test=0.2, salt="other") for i in ids]
    assert a != c  # the salt reshuffles
    assert 0 <= hash_unit("x", "s") < 1


def test_headerless_csv_error_does_not_echo_the_first_row(tmp_path):
    p = tmp_path / "noheader.csv"
    p.write_text(
        "1,p1,John Q Patient is a 54 year old man with crushing chest pain at rest\n"
        "2,p2,Second note\n"
    )
    with pytest.raises(DataError) as e:
        ingest_source(_spec(), p)
    assert "John" not in str(e.value) and "does not look like a header" in str(e.value)


def test_jsonl_with_bom_reads_first_row(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": 1, "mrn": "a", "note": "x"}).encode() + b"\n")
    assert ingest_source(_spec(), p).counts["kept"] == 1


# --- bad input ------------------------------------------------------------------------------
def _mixed_encoding_csv(tmp_path):
    p = tmp_path / "mixed.csv"
    p.write_bytes(
        b"id,mrn,note\n"
        + "1,p1,caf\u00e9 fine in UTF-8\n".encode()
        + "2,p2,caf\u00e9 SECRETNAME in Latin-1\n".encode("latin-1")
        + b"3,p3,plain ascii\n"
    )
    return p


def test_mixed_encodings_error_names_file_row_and_column(tmp_path):
    with pytest.raises(DataError) as e:
        ingest_source(_spec(), _mixed_encoding_csv(tmp_path))
    msg = str(e.value)
    assert "mixed.csv: row 3, column 'note'" in msg and "decode_errors" in msg
    assert "SECRETNAME" not in msg and "\n" not in msg


def test_mixed_encodings_quarantine_keeps_the_rest(tmp_path):
    res = ingest_source(_spec(decode_errors="quarantine"), _mixed_encoding_csv(tmp_path))
    assert [n.note_id for n in res.notes] == ["1", "3"]
    assert res.notes[0].text.startswith("caf\u00e9")
    (q,) = res.quarantined
    assert q["reason"] == "undecodable_bytes" and q["row"] == 3
    assert "\\xe9" in q["data"]["note"]  # the raw byte, shown escaped; JSON-serializable
    json.dumps(q, ensure_ascii=False).encode()


def test_jsonl_mixed_encodings(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_bytes(
        b'{"id": "1", "mrn": "a", "note": "ok"}\n'
        + '{"id": "2", "mrn": "b", "note": "caf\u00e9"}\n'.encode("latin-1")
    )
    with pytest.raises(DataError, match=r"m\.jsonl: row 2, column 'note'"):
        ingest_source(_spec(), p)
    res = ingest_source(_spec(decode_errors="quarantine"), p)
    assert res.counts["kept"] == 1 and res.counts["quarantine_reasons"] == {"undecodable_bytes": 1}


def test_wrong_types(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"id": ["1"], "mrn": ["p"], "note": [12345]}), p)
    with pytest.raises(DataError, match=r"ints\.parquet: column 'note' has type int64, expected"):
        ingest_source(_spec(), p)
    j = tmp_path / "t.jsonl"
    j.write_text('{"id": 1, "mrn": 7, "note": ["a", "list"]}\n{"id": 2, "mrn": 8, "note": "ok"}\n')
    res = ingest_source(_spec(), j)  # numeric ids are fine; a list is not note text
    assert [n.note_id for n in res.notes] == ["2"]
    assert res.counts["quarantine_reasons"] == {"wrong_type": 1}


def test_ragged_csv_rows_and_empty_files(tmp_path):
    p = tmp_path / "ragged.csv"
    p.write_text("id,mrn,note\n1,p1,ok\n2,p2,too,many,fields\n3,p3\n")
    res = ingest_source(_spec(), p)
    assert res.counts["quarantine_reasons"] == {"unparseable_row": 1, "empty_text": 1}
    assert res.counts["rows_in"] == 3
    for body in ("", "id,mrn,note\n"):
        e = tmp_path / "empty.csv"
        e.write_text(body)
        with pytest.raises(DataError, match=r"empty\.csv: no rows"):
            ingest_source(_spec(), e)
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        ingest_source(_spec(), tmp_path / "nope.csv")
