"""Run by test_adapter_contract.py in a subprocess, for what needs a process of its own.

A driver's training raises at step 3, the first of its second epoch (the script catches the
exception and exits normally, as a sweep script that goes on to the next run would), or is
sent a real SIGTERM there. Usage: python _contract_script.py DRIVER raise|sigterm URL FOLDER
"""

from __future__ import annotations

import gc
import sys
import warnings
from pathlib import Path

from _contract_drivers import load_driver

if __name__ == "__main__":
    warnings.simplefilter("ignore")
    name, mode, url, folder = sys.argv[1:5]
    driver = load_driver(name)
    try:
        driver.train(url, Path(folder), interrupt=(mode, 3))  # type: ignore[arg-type]
    except RuntimeError as exc:
        print(f"caught {exc}", flush=True)
    gc.collect()  # the script goes on (to a sweep's next run), the failed training is dropped
    print("exiting", flush=True)
