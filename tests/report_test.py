"""experiments/report.py: the docs' result tables equal what their results files give."""

import pytest

from experiments import report


def test_the_committed_docs_are_what_the_results_files_give(capsys):
  assert report.main(["--check"]) == 0, capsys.readouterr().err


def test_a_stale_table_is_rewritten_and_the_rest_left_alone():
  text = "intro\n<!-- report: official -->\n| old | table |\n<!-- /report -->\noutro, by hand\n"
  new = report.render(text, "x.md")
  assert new.startswith("intro\n<!-- report: official -->\n| Run |")
  assert new.endswith("<!-- /report -->\noutro, by hand\n")
  assert "| old | table |" not in new and report.render(new, "x.md") == new


def test_an_unknown_table_is_one_error():
  with pytest.raises(SystemExit, match="asks for table 'nope'"):
    report.render("<!-- report: nope -->\n<!-- /report -->\n", "x.md")


def test_every_table_renders_from_the_committed_results():
  for name, make in report.TABLES.items():
    text = make()
    assert "\n|---|" in text and "nan" not in text, name


def test_a_factor_row_on_fewer_seeds_is_compared_with_the_base_on_those_seeds(tmp_path, monkeypatch):
  def run(seed, aa, fm, diagonal):
    return {"seed": seed, "average_accuracy": aa, "forgetting": fm,
            "accuracy_matrix": [[diagonal, None], [diagonal - fm, diagonal]]}

  def row(change, runs):
    stats = {m: report._mean_std([r[m] for r in runs]) for m in ("average_accuracy", "forgetting")}
    entry = "pah" + (f", {change[0]}={change[1]}" if change else "")
    return {"setting": "s", "entry": entry, "change": change, "seeds": [0, 1, 2], "runs": runs,
            **stats, "plasticity": report._mean_std([r["accuracy_matrix"][0][0] for r in runs])}

  base = row([], [run(0, 90.0, 4.0, 95.0), run(1, 96.0, 1.0, 97.0), run(2, 96.0, 1.0, 97.0)])
  change = row(["pah.x", 1.0], [run(0, 91.0, 3.0, 94.0)])
  not_run = row(["pah.y", 2.0], [])
  (tmp_path / "f.json").write_text(__import__("json").dumps({"rows": [base, change, not_run]}))
  monkeypatch.setattr(report, "RESULTS", str(tmp_path))
  text = report._factor_table("f.json")
  assert "pah.y" not in text  # a change without runs is left out
  line = [x for x in text.splitlines() if x.startswith("| `pah.x")][0]
  cells = [c.strip() for c in line.strip("|").split("|")]
  # Paired on seed 0: +1.00 AA, -1.00 FM, -1.00 plasticity (not against the 3-seed means).
  assert cells[1] == "1/3 (seed 0)" and cells[3] == "+1.00" and cells[5] == "-1.00" and cells[7] == "-1.00"
