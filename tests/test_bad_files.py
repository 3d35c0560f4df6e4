"""Damaged, missing, foreign and future files: opening refuses with what is wrong and how to repair it."""
import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matryoshka import retrieval
from matryoshka.core import layout
from matryoshka.core.errors import IndexFormatError
from matryoshka.retrieval.verify import verify_index


@pytest.fixture
def copy(small_index, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(small_index, dst)
    return dst


def shard_file(root, name, shard=1):
    return root / layout.SHARDS / layout.shard_name(shard) / name


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("name", [layout.INDEX_FILE, layout.IDS_FILE])
def test_bit_flip_in_a_file_read_whole_is_caught_on_open(copy, name):
    flip_byte(shard_file(copy, name), 1000)
    with pytest.raises(IndexFormatError, match=f"{name}: checksum does not match.*rebuild"):
        retrieval.open_index(copy)


@pytest.mark.parametrize("name", [layout.SHORT_FILE, layout.FULL_FILE, layout.DOC_BYTES])
def test_bit_flip_in_a_memory_mapped_store_is_caught_by_verify(copy, name):
    flip_byte(shard_file(copy, name), 5000)
    retrieval.open_index(copy)  # opening checks sizes and headers only, at any scale
    with pytest.raises(IndexFormatError, match=f"{name}: checksum does not match"):
        verify_index(copy)


@pytest.mark.parametrize("name", [layout.INDEX_FILE, layout.IDS_FILE, layout.SHORT_FILE, layout.FULL_FILE])
def test_truncated_files_are_refused_on_open(copy, name):
    p = shard_file(copy, name)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(IndexFormatError, match=f"{name}: size is .* bytes, the manifest says .*truncated"):
        retrieval.open_index(copy)


def test_missing_shard_and_missing_manifest(copy):
    shutil.rmtree(copy / layout.SHARDS / "00002")
    with pytest.raises(IndexFormatError, match="shard folder .*00002 is missing"):
        retrieval.open_index(copy)
    (copy / layout.MANIFEST).unlink()
    with pytest.raises(IndexFormatError, match="not a matryoshka index"):
        retrieval.open_index(copy)


def test_manifest_from_a_newer_format_and_damaged_manifest(copy):
    m = json.loads((copy / layout.MANIFEST).read_text())
    (copy / layout.MANIFEST).write_text(json.dumps({**m, "format_version": layout.FORMAT_VERSION + 1}))
    with pytest.raises(IndexFormatError, match="newer than this engine reads.*upgrade"):
        retrieval.open_index(copy)
    (copy / layout.MANIFEST).write_text(json.dumps(m)[:300])
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        retrieval.open_index(copy)


def test_store_with_a_wrong_header_is_refused(copy):
    p = shard_file(copy, layout.SHORT_FILE)
    np.save(p, np.zeros((1000, 31), np.int8))  # a well-formed .npy, but not what the manifest promises
    m = json.loads((copy / layout.MANIFEST).read_text())
    m["shards"][1]["files"][layout.SHORT_FILE]["bytes"] = p.stat().st_size
    (copy / layout.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match=r"holds \(1000, 31\) int8, expected \(1000, 32\) int8"):
        retrieval.open_index(copy)


def test_verify_passes_on_an_intact_index(small_index):
    report = verify_index(small_index)
    assert report["count"] == 3000 and report["shards"] == 3


def opens_and_answers_or_refuses(root, manifest: bytes) -> None:
    """Write `manifest` into the index at `root`: opening must answer queries or raise IndexFormatError."""
    original = (root / layout.MANIFEST).read_bytes()
    try:
        (root / layout.MANIFEST).write_bytes(manifest)
        try:
            index = retrieval.open_index(root)
        except IndexFormatError:
            return
        index.search_batch(np.ones((2, index.full_dim), np.float32), k=5)
    finally:
        (root / layout.MANIFEST).write_bytes(original)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_manifest_bytes_are_refused_cleanly_or_still_open(copy, data):
    """Random byte edits and truncations of the manifest text."""
    raw = bytearray((copy / layout.MANIFEST).read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    opens_and_answers_or_refuses(copy, bytes(raw))


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=3), max_leaves=6)


def _paths(obj, path=()):
    yield path
    children = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in children:
        yield from _paths(value, path + (key,))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_manifest_with_a_field_replaced_or_removed_is_refused_cleanly_or_still_opens(copy, data):
    """Well-formed JSON with any one field, at any depth, replaced by another JSON value or removed."""
    m = json.loads((copy / layout.MANIFEST).read_text())
    path = data.draw(st.sampled_from([p for p in _paths(m) if p]))
    parent = m
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JSON_VALUES)
    opens_and_answers_or_refuses(copy, json.dumps(m).encode())


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=2000))
def test_fuzzed_id_map_is_refused(copy, junk):
    """Replace an id map with random bytes, even with the checksum updated: the loader refuses it cleanly."""
    p = shard_file(copy, layout.IDS_FILE)
    original, manifest = p.read_bytes(), (copy / layout.MANIFEST).read_bytes()
    try:
        p.write_bytes(junk)
        m = json.loads(manifest)
        m["shards"][1]["files"][layout.IDS_FILE] = layout.file_record(p)
        (copy / layout.MANIFEST).write_text(json.dumps(m))
        with pytest.raises(IndexFormatError):
            retrieval.open_index(copy)
    finally:
        p.write_bytes(original)
        (copy / layout.MANIFEST).write_bytes(manifest)


def test_a_manifest_claiming_row_number_ids_for_an_id_map_that_is_not_is_refused(copy):
    m = json.loads((copy / layout.MANIFEST).read_text())
    m["shards"][1]["ids_are_rows"] = True  # the small index has string ids
    (copy / layout.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="ids are the rows 1000..1999, its statistics disagree"):
        retrieval.open_index(copy)
