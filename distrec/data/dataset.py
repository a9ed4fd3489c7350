"""Reading the `data/` artifact back: what every later stage uses.

    data = load_prepared("runs/beauty/data", dataset="beauty")
    data.num_items, data.content_hash, data.sequence_data(), data.item_counts(), data.eval_examples("test")
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa

from distrec.artifacts import check_same_dataset, dir_hash, read_json, read_manifest, read_table
from distrec.data.splits import train_end


@dataclass
class PreparedData:
    directory: Path
    items: pa.Table  # item_id, raw_id, typed fields (kinds in stats["fields"])
    sequences: pa.Table | None  # user_id, raw_user_id, items, [timestamps], valid_pos, test_pos (None: not loaded)
    stats: dict
    split: dict
    manifest: dict

    @property
    def num_items(self) -> int:
        return int(self.stats["items"])

    @property
    def num_users(self) -> int:
        return int(self.stats["users"])

    @cached_property
    def content_hash(self) -> str:
        """Hash of the sequences: what a trained model records and an evaluation checks."""
        return dir_hash(self.directory / "sequences")

    def sequence_data(self):
        """The sequences as the training loop and evaluation read them (distrec.data.batches.SequenceData)."""
        from distrec.data.batches import SequenceData

        return SequenceData.from_arrow(self.sequences, source=self.directory / "sequences")

    @property
    def fields(self) -> dict[str, str]:
        """Item field name -> kind (text | categorical | multi_categorical | numeric)."""
        return self.stats["fields"]

    @cached_property
    def offsets(self) -> np.ndarray:
        return self.sequences.column("items").combine_chunks().offsets.to_numpy().astype(np.int64)

    @cached_property
    def flat_items(self) -> np.ndarray:
        return self.sequences.column("items").combine_chunks().values.to_numpy().astype(np.int64)

    @cached_property
    def train_lengths(self) -> np.ndarray:
        """Length of each user's training prefix (see distrec.data.splits.train_end)."""
        valid = self.sequences.column("valid_pos").to_numpy()
        test = self.sequences.column("test_pos").to_numpy()
        return train_end(valid, test, np.diff(self.offsets))

    def train_mask(self) -> np.ndarray:
        """Boolean mask over the flattened `items` column: True where an interaction is in training."""
        lengths = np.diff(self.offsets)
        position = np.arange(len(self.flat_items)) - np.repeat(self.offsets[:-1], lengths)
        return position < np.repeat(self.train_lengths, lengths)

    def item_counts(self) -> np.ndarray:
        """Training-split frequency of each item id: int64 [num_items + 1], index 0 (padding) = 0."""
        counts = np.bincount(self.flat_items[self.train_mask()], minlength=self.num_items + 1)
        counts[0] = 0
        return counts.astype(np.int64)

    def train_item_ids(self) -> np.ndarray:
        """Sorted ids of the items that occur in some user's training prefix."""
        return np.flatnonzero(self.item_counts())

    def train_sequences(self) -> list[np.ndarray]:
        """Each user's training prefix (oldest -> newest)."""
        return [self.flat_items[s: s + n] for s, n in zip(self.offsets[:-1], self.train_lengths)]

    def eval_examples(self, which: str = "test") -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """(user_ids, histories, targets) of the users with a `which` ('valid' | 'test') target."""
        pos = self.sequences.column(f"{which}_pos").to_numpy()
        users = np.flatnonzero(pos >= 0)
        starts = self.offsets[users]
        histories = [self.flat_items[s: s + p] for s, p in zip(starts, pos[users])]
        targets = self.flat_items[starts + pos[users]]
        user_ids = self.sequences.column("user_id").to_numpy()[users]
        return user_ids, histories, targets

    def field_text(self, field: str) -> list[str | None]:
        """One field of every item as text (row i = item i + 1): categorical ids decoded to their names,
        lists joined with ', ', numbers formatted; None where missing. Unknown fields give all None."""
        if field not in self.items.column_names:
            return [None] * len(self.items)
        kind, values = self.fields.get(field, "text"), self.items.column(field).to_pylist()
        if kind == "categorical":
            names = self.vocabulary(field)
            return [names[v] if v else None for v in values]
        if kind == "multi_categorical":
            names = self.vocabulary(field)
            return [", ".join(names[i] for i in v) if v else None for v in values]
        if kind == "numeric":
            return [None if v is None else f"{v:g}" for v in values]
        return values

    def item_texts(self, fields: list[str], separator: str = ". ", max_chars: int = 0) -> list[str]:
        """Per item, the non-missing `fields` as text, each cut to `max_chars` (0 = whole), joined by `separator`
        (input of text embedders)."""
        columns = [self.field_text(f) for f in fields]
        cut = slice(0, max_chars or None)
        return [separator.join(v[cut] for v in row if v) for row in zip(*columns)] if columns else [""] * len(self.items)

    def vocabulary(self, field: str) -> list[str]:
        """Names of a categorical field's ids: index i -> value of id i (index 0 = missing = '')."""
        table = read_table(self.directory / "maps" / field)
        names = [""] * (len(table) + 1)
        for value, i in zip(table.column("value").to_pylist(), table.column("id").to_pylist()):
            names[i] = value
        return names


def load_prepared(data_dir: str | Path, dataset: str | None = None, *, sequences: bool = True,
                  item_columns: list[str] | None = None) -> PreparedData:
    """Load a complete `data/` artifact (raises DataError when it is missing or half-written); with
    `dataset`, refuse one made from another dataset (the command's `data.name`). `sequences=False` and
    `item_columns` leave out what a reader does not need (a model answering requests: the items' raw ids)."""
    data_dir = Path(data_dir)
    if dataset is not None:
        check_same_dataset(data_dir, dataset)
    manifest = read_manifest(data_dir)
    return PreparedData(
        directory=data_dir,
        items=read_table(data_dir / "items", columns=item_columns),
        sequences=read_table(data_dir / "sequences") if sequences else None,
        stats=read_json(data_dir / "stats.json"),
        split=read_json(data_dir / "splits.json"),
        manifest=manifest,
    )
