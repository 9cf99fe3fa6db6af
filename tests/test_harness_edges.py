"""Bad and stressful harness input (scripts/check_harness.py): every case exits 0 with a verdict
(or, where no results file can be written, a message), leaves no process and no stray file;
signals at any moment still leave a verdict, a killed script takes its verifier with it, and
prepare_instance.sh never kills a live run."""

import os
import sys

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import check_harness  # noqa: E402


def test_every_harness_edge_case_holds(capsys):
    rc = check_harness.main([])
    table = capsys.readouterr().out
    assert rc == 0, table
    assert table.count("\n") >= len(check_harness.CASES) + 2
