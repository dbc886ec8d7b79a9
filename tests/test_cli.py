"""``conescope sql``: read-only queries printed as a table, errors as one line."""

import duckdb

from pipelines.cli import main
from storage.warehouse import Warehouse, metric_rows


def _warehouse(root):
    wh = Warehouse(root / "warehouse.duckdb")
    wh.replace_rows("metrics.isotropy", metric_rows([{"dataset": "d", "model": "m", "lang": "en", "modality": "text",
                                                      "metric": "i1", "value": 0.25, "n": 4}]),
                    {"model": "m", "lang": "en"})
    return wh


def test_sql_prints_a_table(data_root, capsys):
    _warehouse(data_root)
    assert main(["sql", "SELECT model, lang, metric, value FROM metrics.isotropy"]) == 0
    out = capsys.readouterr().out
    assert "0.25" in out and "i1" in out and "model" in out


def test_sql_csv(data_root, capsys):
    _warehouse(data_root)
    assert main(["sql", "SELECT metric, value FROM metrics.isotropy", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ['"metric","value"', '"i1",0.25']


def test_sql_is_read_only(data_root, capsys):
    _warehouse(data_root)
    assert main(["sql", "DELETE FROM metrics.isotropy"]) == 2
    assert "read-only" in capsys.readouterr().err.lower()
    with duckdb.connect(str(data_root / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM metrics.isotropy").fetchone()[0] == 1


def test_sql_without_warehouse_says_what_to_run(data_root, capsys):
    assert main(["sql", "SELECT 1"]) == 2
    assert "conescope materialize" in capsys.readouterr().err
