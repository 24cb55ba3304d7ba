"""Bad inputs as a new user gives them: files that are not text or not well-formed, paths that cannot be
read or written, values the run cannot honour, options that do nothing. Each is exit 2 with the file (or
flag), the place and the fix, before anything runs; nothing is changed silently."""
import json
import shutil

import pytest
import yaml

from rsd_ray.config.loader import CONFIG_ROOT
from tests.test_open_rack import cli

RUN = ("run", "--executor", "inline", "--no-progress", "--rack", "mini", "--model", "tiny-llama", "--tp", "2",
       "--duration", "1")


@pytest.fixture
def files(tmp_path):
    """A folder of bad (and one good) input files, the working folder of the command."""
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "twice.yaml").write_text("max_num_seqs: 4\nblock_size: 16\nmax_num_seqs: 8\n")
    (tmp_path / "broken.yaml").write_text("max_num_seqs: [1,\n  block_size 4\n")
    (tmp_path / "rows.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                       "2023-11-16 18:15:46.6805900,374,44\nnot-a-time,x,y\n")
    sub = tmp_path / "racks"                       # a rack naming its device by a path relative to itself
    sub.mkdir()
    shutil.copy(CONFIG_ROOT / "devices" / "atom.yaml", sub / "my-card.yaml")
    rack = yaml.safe_load((CONFIG_ROOT / "racks" / "mini.yaml").read_text()) | {"device": "my-card.yaml"}
    (sub / "rack.yaml").write_text(yaml.safe_dump(rack))
    return tmp_path


BAD = {   # what is given → what the message must say
    "YAML that is not text": (["--engine", "binary.yaml"], "binary.yaml: <file> = 'not text'"),
    "a key given twice": (["--engine", "twice.yaml"], "twice.yaml: line 3, column 1 = 'invalid YAML' — the key "
                                                      "'max_num_seqs' is given twice"),
    "YAML syntax error": (["--engine", "broken.yaml"], "broken.yaml: line 3, column 1 = 'invalid YAML'"),
    "trace not found": (["--workload", "trace:azure:nope.csv"], "workload.trace.path = 'nope.csv' — not found"),
    "trace not text": (["--workload", "trace:azure:binary.csv"], "binary.csv: <file> = 'not text'"),
    "malformed trace row": (["--workload", "trace:azure:rows.csv"], "rows.csv: line 3 = "),
    "CSV output not writable": (["--requests-csv", "/proc/r.csv"], "--requests-csv = '/proc/r.csv' — cannot be "
                                                                    "written"),
    "prompt beyond the context": (["--input-len", "100000"], "workload.input.mean = 100000 — the shortest request "
                                                             "(100000 prompt + 128 output tokens) does not fit "
                                                             "max_model_len 2048"),
    "answer beyond the context": (["--output-len", "3000"], "workload.output.mean = 3000"),
    "a fault after the arrivals": (["--fault", "card:1@5s"], "--fault = 'card:1@5s' — the run's requests arrive "
                                                             "for 1 s"),
    "--address on inline": (["--address", "auto"], "--address = 'auto' — applies to --executor ray"),
    "--trace-window without --trace": (["--trace-window", "0:2"], "--trace-window = '0:2' — applies with --trace"),
    "--refresh without --dashboard": (["--refresh", "1"], "--refresh = 1.0 — applies with --dashboard"),
    "a rate no machine can hold": (["--rate", "1e12"], "workload.rate = 1000000000000.0 — must be ≤ 1000000"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_input_is_refused_before_anything_runs_with_where_and_the_fix(case, files):
    args, says = BAD[case]
    res = cli(*RUN, "--out", "r.json", *args, cwd=files)
    assert res.returncode == 2, res.stderr
    assert says in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (files / "r.json").exists() and "Output token throughput" not in res.stdout   # no report


def test_a_path_inside_a_yaml_file_is_read_from_that_files_folder(files, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")          # not the rack file's folder
    res = cli(*RUN[:4], "--rack", str(files / "racks" / "rack.yaml"), "--model", "tiny-llama", "--tp", "2",
              "--duration", "1", "--out", "r.json", cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    assert json.loads((elsewhere / "r.json").read_text())["config"]["rack"]["device"] == \
        str(files / "racks" / "my-card.yaml")                 # the results say what ran


def test_requests_shortened_to_fit_the_model_are_counted_and_said_once(files):
    """tiny-llama holds 2048 tokens; lognormal prompts of mean 1500 (sigma 1) often draw more."""
    workload = {"arrival": "poisson", "rate": 50, "input": {"dist": "lognormal", "mean": 1500, "sigma": 1.0},
                "output": {"dist": "fixed", "mean": 100}}
    (files / "long.yaml").write_text(yaml.safe_dump(workload))
    res = cli(*RUN, "--workload", "long.yaml", "--out", "r.json", cwd=files)
    clipped = json.loads((files / "r.json").read_text())["requests"]["clipped"]
    assert res.returncode == 0 and clipped > 0, res.stderr
    assert res.stderr.count(f"{clipped} requests were shortened to fit max_model_len 2048") == 1


def test_an_output_folder_that_cannot_be_made_is_refused_before_any_point(files):
    res = cli("sweep", "--rack", "mini", "--model", "tiny-llama", "--tp", "2", "--duration", "1", "--grid", "tp=2",
              "--out-dir", "/proc/sweep", cwd=files)
    assert res.returncode == 2 and "--out-dir = '/proc/sweep' — cannot be made" in res.stderr, res.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`rsd-ray presets | head -1`: the pipe closes after one line; no traceback, the shell's SIGPIPE status."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "rsd_ray.cli", "presets"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()                                     # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "Exception ignored" not in err
