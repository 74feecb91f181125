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
