"""``python -m wsi_dram.cli``: the same as the ``wsi-dram`` console script."""

from wsi_dram.cli import main

main()
