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
