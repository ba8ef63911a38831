"""Amazon reviews (2014, 2018, 2023; plain or .gz) -> canonical tables + instruction samples.

    python data_prep/amazon.py --reviews reviews_Books_5.json.gz --meta meta_Books.json.gz --out data/books

Options: ``--help``; the pipeline and output layout: :mod:`llm4rec.data.prep`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm4rec.data.allocator import keep_freed_pages  # noqa: E402

keep_freed_pages()  # before polars is imported

from llm4rec.data.prep import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:], source="amazon"))
