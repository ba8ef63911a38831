"""Any interaction log (CSV, TSV, Parquet, JSONL) with a column mapping -> canonical tables + samples.

    python data_prep/generic.py --interactions log.csv --user-col uid --item-col iid --rating-col stars \\
        --time-col ts --items items.csv --title-col name --out data/mylog

Options: ``--help``; the pipeline and output layout: :mod:`llm4rec.data.prep`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm4rec.data.allocator import keep_freed_pages  # noqa: E402

keep_freed_pages()  # before polars is imported

from llm4rec.data.prep import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:], source="generic"))
