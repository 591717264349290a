"""The conventions every command shares: one-line errors with exit 2 (bad input) or 1 (environment)."""

from __future__ import annotations

import pytest

from compressor import cli


@pytest.mark.parametrize("argv, expected", [
    (["compress", "--teacher", "t.pt", "--out", "run", "--latency-ms", "0"], "--latency-ms: must be > 0"),
    (["compress", "--teacher", "t.pt", "--out", "run", "--latency-ms", "-1"], "--latency-ms: must be > 0"),
    (["compress", "--teacher", "t.pt", "--out", "run", "--trials", "0"], "--trials: must be > 0"),
    (["distill", "--epochs", "0"], "--epochs: must be > 0"),
    (["compress", "--out", "run"], "the following arguments are required: --teacher"),
    (["no-such-command"], "invalid choice: 'no-such-command'"),
])
def test_command_line_errors_are_one_line_and_exit_2(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert expected in err and "usage:" not in err
    assert err.rstrip().endswith("--help)")


@pytest.mark.slow
def test_resume_on_a_file_that_is_not_a_run_database_is_one_line_exit_1(tiny_teacher, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "trials.sqlite").write_bytes(b"this is not an SQLite database, it is a text file " * 100)
    code = cli.main(["compress", "--teacher", tiny_teacher, "--image-size", "16", "--channels", "1",
                     "--out", str(run), "--resume", "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "could not be read or written" in err
