"""MovieLens in its GroupLens formats.

ml-1m:   ratings.dat `UserID::MovieID::Rating::Timestamp`, movies.dat `MovieID::Title::Genre|Genre`
         (latin-1). users.dat holds demographics; it is not used.
ml-100k: u.data `user \\t item \\t rating \\t timestamp`, u.item `id|title|release date|video date|url|19 flags`,
         u.genre `name|index` (the genre flag names).
Where ratings.dat is not available, `files.sequences_pkl` reads the DiffuRec `dataset.pkl` instead
(a dict of train/val/test lists per user plus the umap/smap id maps), order only, no ratings.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

from distrec.data.readers.base import RawData, RowErrors, find, lines, require
from distrec.errors import DataError

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western"]
YEAR = re.compile(r"\((\d{4})\)\s*$")


def read(cfg, errors: RowErrors) -> RawData:
    root = require(cfg.path, "dataset folder")
    raw = RawData(has_catalog=False)
    movies = find(root, [cfg.files.get("movies", "movies.dat"), "u.item"], "movies file", required=False)
    if movies is not None:
        (read_u_item if movies.name.startswith("u.item") else read_movies_dat)(movies, raw, errors, root)
    if "sequences_pkl" in cfg.files:
        read_diffurec_pkl(find(root, [cfg.files["sequences_pkl"]], "DiffuRec dataset.pkl"), raw)
        return raw
    ratings = find(root, [cfg.files.get("ratings", "ratings.dat"), "u.data"], "ratings file (ratings.dat or u.data)")
    separator = "\t" if ratings.name.startswith("u.data") else "::"
    for number, line in lines(ratings, raw, encoding="latin-1"):
        parts = line.split(separator)
        if len(parts) != 4:
            errors.bad("malformed_line", f"expected 4 fields separated by {separator!r}, found {len(parts)}",
                       ratings, number, hint="format: user, item, rating, timestamp")
            continue
        user, item, rating, timestamp = (p.strip() for p in parts)
        try:
            rating, timestamp = float(rating), int(timestamp)
        except ValueError:
            errors.bad("malformed_line", "rating/timestamp is not a number", ratings, number, hint="fix the line")
            continue
        raw.log.add(user, item, timestamp, rating)
    return raw


def movie_fields(title: str, genres: list[str]) -> dict:
    year = YEAR.search(title)
    return {"title": title.strip(), "genres": genres, "year": int(year.group(1)) if year else None}


def read_movies_dat(path: Path, raw: RawData, errors: RowErrors, root: Path) -> None:
    for number, line in lines(path, raw, encoding="latin-1"):
        parts = line.split("::")
        if len(parts) != 3:
            errors.bad("malformed_line", f"expected MovieID::Title::Genres, found {len(parts)} fields", path, number)
            continue
        add_movie(raw, errors, parts[0], movie_fields(parts[1], [g for g in parts[2].split("|") if g]), path, number)


def read_u_item(path: Path, raw: RawData, errors: RowErrors, root: Path) -> None:
    genres = ML100K_GENRES
    genre_file = find(root, ["u.genre"], "genre names", required=False)
    if genre_file is not None:
        pairs = [line.split("|") for _, line in lines(genre_file, raw, encoding="latin-1")]
        genres = [name for name, _ in sorted(pairs, key=lambda p: int(p[1]))]
    for number, line in lines(path, raw, encoding="latin-1"):
        parts = line.split("|")
        if len(parts) != 5 + len(genres):
            errors.bad("malformed_line", f"expected {5 + len(genres)} '|'-separated fields, found {len(parts)}",
                       path, number)
            continue
        flags = parts[5:]
        fields = movie_fields(parts[1], [g for g, flag in zip(genres, flags) if flag.strip() == "1"])
        add_movie(raw, errors, parts[0], fields, path, number)


def add_movie(raw: RawData, errors: RowErrors, key: str, fields: dict, path: Path, number: int) -> None:
    key = key.strip()
    if key in raw.items:
        errors.bad("duplicate_item", f"movie id {key} appears twice", path, number, hint="remove the duplicate line")
        return
    raw.items[key] = fields


class PlainDataUnpickler(pickle.Unpickler):
    """Loads only plain containers and numbers: a pickle that asks for any class is refused."""

    def find_class(self, module, name):
        raise DataError(f"refusing to load {module}.{name} from a pickle", hint="only plain dict/list data is read")


def read_diffurec_pkl(path: Path, raw: RawData) -> None:
    raw.files.append(path)
    data = PlainDataUnpickler(io.BytesIO(path.read_bytes())).load()
    if not isinstance(data, dict) or not {"train", "val", "test", "umap", "smap"} <= set(data):
        raise DataError("expected a dict with train/val/test/umap/smap", path,
                        hint="this reader reads the DiffuRec dataset.pkl; use ratings.dat otherwise")
    raw_user = {v: str(k) for k, v in data["umap"].items()}
    raw_item = {v: str(k) for k, v in data["smap"].items()}
    for user in sorted(data["train"]):
        items = data["train"][user] + data["val"].get(user, []) + data["test"].get(user, [])
        unknown = [i for i in items if i not in raw_item]
        if unknown:
            raise DataError(f"user {user} has item {unknown[0]} that is not in smap", path)
        raw.log.add_sequence(raw_user[user], [raw_item[i] for i in items])

