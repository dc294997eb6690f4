from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from clinitune.cli import app
from clinitune.errors import RecipeError
from clinitune.recipe import apply_overrides, bundled_recipe, load_recipe

BUNDLED = ["quickstart", "mdm_qwen3_4b", "heal_soap"]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_recipes_validate(name):
    r = load_recipe(name)
    assert r.name == name
    assert r.train, "every bundled recipe trains"
    for src in r.data.sources:
        assert r.resolve_path(src.path).exists()


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _quickstart_dict() -> dict:
    d = yaml.safe_load(bundled_recipe("quickstart").read_text())
    for s in d["data"]["sources"]:
        s["path"] = str(load_recipe("quickstart").resolve_path(s["path"]))
    for m in d["evaluate"]["mcq"]:
        m["path"] = str(load_recipe("quickstart").resolve_path(m["path"]))
    return d


def test_misspelled_key_is_one_line_naming_it(tmp_path):
    d = _quickstart_dict()
    d["data"]["splt"] = d["data"].pop("split")
    with pytest.raises(RecipeError) as e:
        load_recipe(_write(tmp_path, d))
    msg = str(e.value)
    assert "\n" not in msg
    assert "data.splt" in msg and "unknown key" in msg and "r.yaml" in msg


def test_wrong_type_names_key(tmp_path):
    d = _quickstart_dict()
    d["train"][0]["max_steps"] = "many"
    with pytest.raises(RecipeError, match=r"train\.0\.max_steps"):
        load_recipe(_write(tmp_path, d))


def test_missing_file_names_key(tmp_path):
    d = _quickstart_dict()
    d["data"]["sources"][0]["path"] = "nope.csv"
    with pytest.raises(RecipeError, match=r"data\.sources\.0\.path: file not found: nope\.csv"):
        load_recipe(_write(tmp_path, d))


def test_unknown_task_reference(tmp_path):
    d = _quickstart_dict()
    d["train"][0]["tasks"] = ["nonexistent"]
    with pytest.raises(RecipeError, match="unknown task 'nonexistent'"):
        load_recipe(_write(tmp_path, d))


def test_cpt_stage_cannot_train_on_chat_task(tmp_path):
    d = _quickstart_dict()
    d["train"][0]["kind"] = "cpt"
    with pytest.raises(RecipeError, match="cannot train on"):
        load_recipe(_write(tmp_path, d))


def test_unknown_section_name(tmp_path):
    d = _quickstart_dict()
    d["data"]["tasks"]["assessment_plan"]["inputs"] = ["hpi", "histroy"]
    with pytest.raises(RecipeError, match="unknown section 'histroy'"):
        load_recipe(_write(tmp_path, d))


def test_overrides_by_index_and_name():
    d = {"train": [{"name": "sft", "max_steps": 3}], "model": {"name": "x"}}
    out = apply_overrides(
        d,
        [
            "train.sft.max_steps=7",
            "train.0.learning_rate=1e-4",
            "model.name=y",
            "evaluate.held_out.max_examples=2",
        ],
        "t",
    )
    assert out["train"][0]["max_steps"] == 7
    assert out["train"][0]["learning_rate"] == 1e-4
    assert out["model"]["name"] == "y"
    assert out["evaluate"]["held_out"]["max_examples"] == 2
    assert d["train"][0]["max_steps"] == 3  # input not mutated
    out = apply_overrides(d, ["model.system_prompt=You are: a doctor", "model.x={a: 1}"], "t")
    assert out["model"]["system_prompt"] == "You are: a doctor"
    assert out["model"]["x"] == {"a": 1}
    with pytest.raises(RecipeError, match="no item 'dpo'"):
        apply_overrides(d, ["train.dpo.max_steps=1"], "t")
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        apply_overrides(d, ["train"], "t")


def test_cli_user_error_exit_2_without_traceback():
    res = CliRunner().invoke(app, ["validate", "quickstart", "--set", "data.spliit.valid=0.2"])
    assert res.exit_code == 2
    out = res.output
    assert "Traceback" not in out
    assert "data.spliit: unknown key" in out


def test_cli_validate_ok_and_help():
    runner = CliRunner()
    res = runner.invoke(app, ["validate", "heal_soap", "--set", "train.cpt.max_steps=2"])
    assert res.exit_code == 0, res.output
    for cmd in ["prepare", "train", "generate", "evaluate", "report", "run", "quickstart"]:
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and "Usage" in r.output
