"""Row predicates over a shard's attributes: which rows pass a condition, as a bool per row (`row_mask`).

A predicate is a SQL boolean expression over the attribute columns, evaluated by DuckDB (which parses it and
names the column or position of an error), or a pyarrow compute expression (`pyarrow.compute.field("year")
>= 2020`), evaluated by pyarrow. The SQL grammar is a *row predicate*: DuckDB's expressions over one row's own
attributes, e.g.

    lang = 'en' AND year >= 2020          lang IN ('en', 'de')          NOT archived
    list_contains(tags, 'python')         published >= TIMESTAMP '2024-01-01'
    score BETWEEN 0.2 AND 0.8             lower(title) LIKE '%faiss%'   CASE WHEN a THEN b ELSE c END

Checked on DuckDB's parse tree (json_serialize_sql) once per predicate, before anything runs. Allowed: attribute
names (case-sensitive, as stored, unqualified), constants, comparisons, AND / OR / NOT, IN (values), BETWEEN,
LIKE / ILIKE / GLOB / SIMILAR TO, IS [NOT] NULL, arithmetic, casts, CASE, COLLATE, list indexing, lambdas
(`list_filter(tags, lambda t: t LIKE 'py%')`), and the functions of FUNCTIONS: an explicit allow-list of scalar
functions of a row's values (math, strings, dates and times, lists, structs, maps, nullif / if / coalesce).
Refused by name: more than one statement, clauses or tables beyond the condition, subqueries, window functions,
aggregates, table functions, `*`, parameters, column positions, a name in another case than the attribute's
(YEAR for year: DuckDB would bind it), attributes that differ only by case (DuckDB cannot tell them apart), and
every function not in FUNCTIONS: those that read the session, settings, catalogue or system (`current_setting`,
`duckdb_settings`, `version`, `json_serialize_plan`, `stats`, ...), that differ per call (`random`, `now`) or
that build values of unbounded size (`range`; `list_reduce`, whose accumulator can double at every element;
repeat / lpad / rpad take a constant length up to MAX_SIZE). A filter is evaluated shard by shard, so anything
but a condition on each row's own values would mean something other than what it says. An evaluation that runs
past FILTER_SECONDS (or row_mask's `seconds=`) is stopped with an InputError.

Values a filter builds are bounded before it runs (`growth`): functions that multiply a value's size (repeat,
replace, regexp_replace, url_encode, array_to_string, list_transform, ...) nested in each other would grow it
geometrically, out of memory rather than time. Each value's size is bounded from the parse tree as a multiple
of a power of S, the largest value of the attributes it reads; on a shard whose S makes a bound exceed
MAX_VALUE_BYTES (and LINEAR_GROWTH times S: `lower(title)` of a long title is fine) the filter is refused,
naming the function.

A row passes when the predicate is true (NULL counts as false) and the row is not deleted. A NaN attribute is
missing (NULL) on both paths, made so once per table before either evaluates: no comparison with it is true
(`score > 0.5`, `score != 0.5` and `NOT score > 0.5` are all false), `score IS NULL` is true.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import pickle
import threading
import weakref

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from matryoshka.core.errors import InputError

FILTER_SECONDS = 10.0  # an evaluation of one predicate over one shard's attributes is stopped after this
ROW_CLASSES = {"CONJUNCTION", "COMPARISON", "COLUMN_REF", "CONSTANT", "FUNCTION", "OPERATOR", "CAST", "CASE",
               "BETWEEN", "COLLATE", "TYPE", "LAMBDA"}  # TYPE: of a cast or typed literal; LAMBDA: list functions'
# The functions a filter may call, deny by default: scalar functions of a row's values (operators, math, strings,
# dates and times, lists, structs and maps, conditionals). Left out: whatever reads the session, settings,
# catalogue or system (current_setting, version, json_serialize_plan, stats, write_log, ...), differs per call
# (random, now, age(ts)) or builds values of unbounded size (range, printf widths).
FUNCTIONS = frozenset("""
    + - * / // % ** ^ || & | << >> ~ ~~ !~~ ~~* !~~* ~~~ ^@ <@ @> && like_escape not_like_escape ilike_escape
    not_ilike_escape add subtract multiply divide fdiv xor
    abs acos acosh asin asinh atan atan2 atanh bit_count cbrt ceil ceiling cos cosh cot degrees even exp factorial
    floor fmod gamma gcd greatest greatest_common_divisor isfinite isinf isnan lcm least least_common_multiple lgamma
    ln log log10 log2 mod nextafter pi pow power radians round round_even roundbankers sign signbit sin sinh sqrt
    tan tanh trunc
    ascii bit_length char_length character_length chr concat concat_ws contains ends_with suffix starts_with prefix
    instr strpos position lcase ucase lower upper left right left_grapheme right_grapheme len length length_grapheme
    strlen octet_length ltrim rtrim trim lpad rpad repeat replace reverse md5 sha1 sha256 hash regexp_matches
    regexp_full_match regexp_extract regexp_extract_all regexp_replace regexp_split_to_array regexp_escape split
    string_split str_split string_split_regex str_split_regex string_to_array split_part substr substring
    substring_grapheme strip_accents translate unicode ord levenshtein damerau_levenshtein editdist3 hamming
    mismatches jaccard jaro_similarity jaro_winkler_similarity nfc_normalize url_decode url_encode
    century day dayname dayofmonth dayofweek dayofyear decade epoch epoch_ms epoch_ns epoch_us era hour isodow
    isoyear julian last_day microsecond millennium millisecond minute month monthname nanosecond quarter second week
    weekday weekofyear year yearweek date_diff datediff date_part datepart date_sub datesub date_trunc datetrunc
    date_add days_in_month strftime strptime try_strptime make_date make_time make_timestamp make_timestamp_ms
    make_timestamp_ns time_bucket to_timestamp to_centuries to_days to_decades to_hours to_microseconds to_millennia
    to_milliseconds to_minutes to_months to_quarters to_seconds to_weeks to_years timezone timezone_hour
    timezone_minute
    list_value list_pack array_value list_contains list_has array_contains array_has list_has_all list_has_any
    array_has_all array_has_any list_position list_indexof array_position array_indexof list_extract list_element
    array_extract list_slice array_slice array_length cardinality list_cat list_concat array_cat array_concat
    list_distinct array_distinct list_unique array_unique list_sort array_sort list_reverse_sort array_reverse_sort
    list_grade_up array_grade_up grade_up list_intersect array_intersect list_filter array_filter filter
    list_transform array_transform list_apply array_apply apply list_zip array_zip
    list_select array_select list_where array_where flatten list_append array_append list_prepend array_prepend
    array_push_back array_push_front array_pop_back array_pop_front list_reverse array_reverse array_to_string
    list_aggregate list_aggr array_aggregate array_aggr list_count list_sum list_avg list_min list_max list_first
    list_last list_any_value list_bool_and list_bool_or list_string_agg list_median list_mode list_product
    list_dot_product list_inner_product list_cosine_similarity list_cosine_distance list_distance
    struct_pack row struct_extract struct_extract_at struct_insert struct_concat map map_extract map_extract_value
    element_at map_keys map_values map_contains map_entries map_from_entries
    nullif if coalesce ifnull
""".split())
SIZED = {"repeat": 1, "lpad": 1, "rpad": 1}  # functions whose argument at this position multiplies a value's size
MAX_SIZE = 10_000  # the largest such argument: a constant (repeat(s, 10**9) would exhaust memory, not time)
REFUSED = dict.fromkeys(("list_reduce", "array_reduce", "reduce"), "its accumulator can double a value at every "
                        "element; use list_sum, list_aggregate or list_transform")
# DuckDB evaluates 2,048 rows at a time, each with every value the filter builds: a built value may be this large ...
MAX_VALUE_BYTES = 1 << 18
LINEAR_GROWTH = 16  # ... or this many times the largest attribute value it reads, whichever is larger
BUILDERS = {"list_transform", "array_transform", "list_apply", "array_apply", "apply"}  # lambda's value per element
KEEPERS = {"list_filter", "array_filter", "filter"}  # a lambda that picks elements of the list
# functions whose value is at most the product of the sizes of the arguments at these positions
PRODUCTS = {"replace": (0, 2), "array_to_string": (0, 1), "list_select": (0, 1), "array_select": (0, 1),
            **dict.fromkeys(("list_aggregate", "list_aggr", "array_aggregate", "array_aggr"), (0, 2))}
PREDICATES = {"OPERATOR_NOT", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL", "COMPARE_IN", "COMPARE_NOT_IN"}


def key(where) -> str:
    """The cache key of a predicate; refuses what is not a predicate."""
    if isinstance(where, str):
        if not where.strip():
            raise InputError("where= is empty; give a condition such as \"lang = 'en'\" or leave it out")
        return "sql:" + utf8(where).strip()
    if isinstance(where, pc.Expression):  # str() shortens long value sets: key on the whole expression
        return "expr:" + hashlib.sha256(pickle.dumps(where)).hexdigest()
    raise InputError(f"where= takes a SQL condition (a string) or a pyarrow.compute expression; got "
                     f"{type(where).__name__}")


def utf8(where: str) -> str:
    """`where`, refused by name when it cannot be encoded as UTF-8 (a lone surrogate: Python's stand-in for bytes
    that were not UTF-8, as in a command line argument)."""
    try:
        where.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"where={where!r}: character {e.start} ({where[e.start]!r}) is not text that UTF-8 can "
                         "encode (a lone surrogate, from bytes that were not UTF-8); write the condition as UTF-8 "
                         "text") from None
    return where


@functools.lru_cache(maxsize=4)
def _functions(kind: str) -> frozenset[str]:
    """DuckDB's function names of one kind ('scalar', 'aggregate', ...)."""
    import duckdb
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        names = con.execute("SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = ?", [kind])
        return frozenset(n for (n,) in names.fetchall())
    finally:
        con.close()


def _refuse(where: str, what: str) -> InputError:
    return InputError(f"where={where!r}: no {what} allowed: a filter is a condition on each row's own "
                      "attributes (see matryoshka.storage.predicates for the grammar)")


@functools.lru_cache(maxsize=256)
def check_sql(where: str, columns: tuple[str, ...]) -> None:
    """Refuse, by name, what is not a row predicate over `columns` (the module's grammar); parsed, never run."""
    utf8(where)
    folded: dict[str, str] = {}
    for c in columns:
        if folded.setdefault(c.lower(), c) != c:
            raise InputError(f"where={where!r}: attributes {folded[c.lower()]!r} and {c!r} differ only by case, which "
                             "SQL does not tell apart: filter with a pyarrow expression, or rebuild the index with one "
                             "of them renamed")
    try:
        tree = _parse(_wrapped(where))
        if tree.get("error"):
            raise InputError(f"where={where!r}: {_parse_error(where, tree)} (attributes: {', '.join(columns)})")
        statements = tree["statements"]
        node = statements[0]["node"] if len(statements) == 1 else {}
        if len(statements) != 1 or len(node.get("select_list", [])) != 1 or \
                _shape(node) != _wrapper_shape():
            raise _refuse(where, "several statements, clauses and table references")
        _check_expression(where, node["select_list"][0], set(columns))
    except RecursionError:
        raise _too_deep(where) from None


def _too_deep(where: str) -> InputError:
    return InputError(f"where={where!r}: nested too deeply to be checked (a few hundred levels of functions or "
                      "parentheses); write a flatter condition, e.g. IN (...) for many alternatives")


def _parse(sql: str) -> dict:
    """DuckDB's parse tree of `sql` (json_serialize_sql), or {"error": True, ...}; nothing is bound or run."""
    import duckdb
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        return json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    finally:
        con.close()


@functools.lru_cache(maxsize=1)
def _wrapper_shape() -> dict:
    return _shape(_parse(_wrapped("true"))["statements"][0]["node"])


def _shape(tree):
    """A parse tree without its select list and source positions: what the wrapper around a condition fixes."""
    if isinstance(tree, dict):
        return {k: _shape(v) for k, v in tree.items()
                if k not in ("select_list", "query_location", "query_location_length")}
    return [_shape(x) for x in tree] if isinstance(tree, list) else tree


def _check_expression(where: str, e, columns: set[str]) -> None:
    if isinstance(e, list):
        for x in e:
            _check_expression(where, x, columns)
        return
    if not isinstance(e, dict):
        return
    kind = e.get("class")
    if kind == "SUBQUERY":
        raise _refuse(where, "subqueries")
    if kind == "WINDOW":
        raise _refuse(where, f"window functions ({e.get('function_name')})")
    if kind is not None and kind not in ROW_CLASSES:
        raise _refuse(where, f"{kind.lower().replace('_', ' ')} expressions")
    if kind == "COLUMN_REF":
        names = e["column_names"]
        if len(names) != 1 or names[0] not in columns:
            near = [c for c in columns if c.lower() == names[-1].lower()]
            hint = f"; did you mean {near[0]!r}? names are case-sensitive" if near else ""
            raise InputError(f"where={where!r}: column \"{'.'.join(names)}\" not found: no such attribute{hint} "
                             f"(attributes: "
                             f"{', '.join(sorted(columns))})")
    if kind == "LAMBDA":  # lambda x: ..., lambda x, i: ...: the parameters are names inside its body
        lhs = e["lhs"]
        params = [lhs] if lhs.get("class") == "COLUMN_REF" else [a["expression"] for a in lhs.get("arguments", [])]
        if any(p.get("class") != "COLUMN_REF" or len(p["column_names"]) != 1 for p in params):
            raise _refuse(where, "lambda parameters other than plain names")
        _check_expression(where, e["expr"], columns | {p["column_names"][0] for p in params})
        return
    if kind == "FUNCTION":
        name = e["function_name"].lower()
        if name in _functions("aggregate"):
            raise _refuse(where, f"aggregates ({e['function_name']})")
        if e.get("schema") or e.get("catalog"):
            raise _refuse(where, f"qualified function names ({'.'.join(e['qualified_name']['path'])})")
        if name in REFUSED:
            raise InputError(f"where={where!r}: {e['function_name']}() is not allowed in a filter: {REFUSED[name]}")
        if name not in FUNCTIONS:
            raise InputError(f"where={where!r}: {e['function_name']}() is not allowed: a filter calls only the "
                             "row functions of matryoshka.storage.predicates.FUNCTIONS (no settings, catalogue, "
                             "system, clock or random functions)")
        if name in SIZED:
            args = e.get("arguments", [])
            n = args[SIZED[name]]["expression"] if len(args) > SIZED[name] else {}
            if n.get("class") != "CONSTANT" or n["literal"].get("kind") != "INTEGER" or \
                    int(n["literal"]["text"]) > MAX_SIZE:
                raise InputError(f"where={where!r}: {name}() takes a constant length of at most {MAX_SIZE:,}")
    for key, value in e.items():
        if isinstance(value, (dict, list)):
            _check_expression(where, value, columns)


PREFIX = "SELECT coalesce(("  # what _wrapped puts before the condition


def _wrapped(where: str) -> str:
    return f"{PREFIX}{where}\n), false) AS m FROM attrs"


def _parse_error(where: str, tree: dict) -> str:
    """DuckDB's parse error, its position told in the user's condition rather than in the query around it."""
    message = tree.get("error_message", "not a SQL condition")
    try:
        at = int(tree["position"]) - len(PREFIX.encode())  # DuckDB counts bytes of the UTF-8 query
    except (KeyError, TypeError, ValueError):
        return message
    text = where.encode("utf-8")
    if (extra := _unopened(where)) is not None:  # it would close the wrapper's parenthesis: the error comes later
        return f"syntax error at character {extra + 1}: this ')' closes no '(' of the condition"
    if at >= len(text.rstrip()):  # at the wrapper's text: the condition stopped before it was complete
        return (f"syntax error: the condition ends before it is complete, after {where.rstrip()[-20:]!r} (a value, "
                "an operand or a closing parenthesis is missing)")
    if at < 0:
        return message
    column = len(text[:at].decode("utf-8", errors="ignore")) + 1
    return f"{message.split(' at or near')[0]} at character {column}, near {where[column - 1:column + 19]!r}"


def _unopened(where: str) -> int | None:
    """The position of the first ')' of `where` (outside quotes) that closes no '(' of it, or None."""
    depth, quote = 0, None
    for i, c in enumerate(where):
        if quote:
            quote = None if c == quote else quote  # a doubled quote closes and reopens: the same count
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                return i
    return None


Bound = dict[int, float]  # {d: c}: a value of at most the sum of c * S**d bytes, S the largest attribute value read
ONE: Bound = {0: 1.0}
MAX_DEGREE = 64  # a bound's powers of S stop here: past 2**64 bytes a filter is refused anyway, and 1**d is 1


class Growth:
    """Bounds of the values a filter builds (`built`: each function's bound and name) and the attributes they grow
    from (`columns`), from the parse tree alone."""

    def __init__(self):
        self.built: dict[tuple, str] = {}  # bound (as sorted items) -> a function that builds a value that large
        self.columns: set[str] = set()

    def record(self, b: Bound, name: str) -> Bound:
        self.built.setdefault(tuple(sorted(b.items())), name)
        return b

    def size(self, e: dict, env: dict[str, Bound]) -> Bound:
        """The bound of expression `e`; `env`: the bounds of the lambda parameters in scope."""
        kind = e.get("class")
        if kind == "CONSTANT":
            return {0: float(max(len(str(e.get("literal", {}).get("text") or "")), 1))}
        if kind == "COLUMN_REF":
            name = e["column_names"][-1]
            if name in env:
                return env[name]
            self.columns.add(name)
            return {1: 1.0}
        if kind == "FUNCTION":
            return self.record(self.function(e, env), e["function_name"])
        parts = [self.size(c, env) for c in _children(e)]
        if kind in ("COMPARISON", "CONJUNCTION", "BETWEEN") or e.get("type") in PREDICATES:
            return ONE
        if kind == "CAST":  # as text, a byte may take up to 8 characters ('false', '1.0e+10, ')
            return self.record(_scaled(_sum(parts), 8), "CAST")
        return _sum(parts)  # CASE, COLLATE, extracts, coalesce: at most their parts

    def function(self, e: dict, env: dict[str, Bound]) -> Bound:
        name = e["function_name"].lower()
        args = [a["expression"] for a in e.get("arguments", [])]
        lam = next((a for a in args if a.get("class") == "LAMBDA"), None)
        if lam is not None:
            return self.lambda_call(name, [a for a in args if a is not lam], lam, env)
        parts = [self.size(a, env) for a in args]
        if name == "repeat" and len(parts) > 1:
            return _scaled(parts[0], _length(args[1]))
        if name in ("lpad", "rpad") and len(parts) > 1:
            return {0: 4.0 * _length(args[1])}  # that many characters, whatever the value
        if name == "url_encode" and parts:
            return _scaled(parts[0], 3)
        if name == "concat_ws" and parts:  # the separator between every two values
            return _sum(parts[1:] + [parts[0]] * max(len(parts) - 2, 0))
        if name == "regexp_replace" and len(parts) > 2:  # each match (or empty match) becomes the replacement
            return _scaled(_product([parts[0], parts[2]]), 2)
        if name in PRODUCTS and len(parts) > max(PRODUCTS[name]):
            return _product([parts[i] for i in PRODUCTS[name]])
        return _sum(parts)

    def lambda_call(self, name: str, args: list[dict], lam: dict, env: dict[str, Bound]) -> Bound:
        """A list function with a lambda: a list_filter keeps elements; a list_transform makes a value per element:
        when the body reads only its parameters, at most the body's bound with the list's size for each power of
        an element's (their sum is at most the list's); when it also reads other values, the list's size times the
        body's."""
        parts = [self.size(a, env) for a in args]
        whole = parts[0] if parts else ONE
        params = _lambda_params(lam)
        if name in KEEPERS:
            self.size(lam["expr"], {**env, **dict.fromkeys(params, whole)})
            return _sum(parts)
        if _free_names(lam["expr"], set(params)):
            return _product([whole, self.size(lam["expr"], {**env, **dict.fromkeys(params, whole)})])
        inner = Growth()  # in units of one element (x), then with the list's bound for x
        body = inner.size(lam["expr"], dict.fromkeys(params, {1: 1.0}))
        for b, fn in inner.built.items():
            self.record(_sum([_scaled(_power(whole, d), c) for d, c in b]), fn)
        return _sum([_scaled(_power(whole, max(d, 1)), c) for d, c in body.items()])


def _sum(parts: list[Bound]) -> Bound:
    out: Bound = {}
    for p in parts:
        for d, c in p.items():
            out[d] = out.get(d, 0.0) + c
    return out or ONE


def _scaled(b: Bound, factor: float) -> Bound:
    return {d: c * factor for d, c in b.items()}


def _product(parts: list[Bound]) -> Bound:
    out = ONE
    for p in parts:
        out = _sum([{min(d1 + d2, MAX_DEGREE): c1 * c2} for d1, c1 in out.items() for d2, c2 in p.items()])
    return out


def _power(b: Bound, k: int) -> Bound:
    return _product([b] * min(k, MAX_DEGREE))


def _at(b: Bound, s: int) -> float:
    """The bound's bytes for S = s."""
    try:
        return sum(c * float(s) ** d for d, c in b.items())
    except OverflowError:
        return math.inf


def _length(e: dict) -> float:
    """A size argument (repeat, lpad, rpad): a constant, checked by check_sql."""
    try:
        return float(max(int(e["literal"]["text"]), 1))
    except (KeyError, TypeError, ValueError):
        return float(MAX_SIZE)


def _children(e: dict) -> list[dict]:
    """The expressions directly below `e`, at any depth of its non-expression fields (arguments, case_checks)."""
    out = []

    def walk(v):
        if isinstance(v, dict) and "class" in v:
            out.append(v)
        elif isinstance(v, (dict, list)):
            for x in (v.values() if isinstance(v, dict) else v):
                walk(x)
    for v in e.values():
        walk(v)
    return out


def _lambda_params(lam: dict) -> list[str]:
    lhs = lam["lhs"]
    params = [lhs] if lhs.get("class") == "COLUMN_REF" else [a["expression"] for a in lhs.get("arguments", [])]
    return [p["column_names"][0] for p in params]


def _free_names(e, bound: set[str]) -> set[str]:
    """The names `e` reads that are not lambda parameters in scope."""
    if isinstance(e, list):
        return set().union(*(_free_names(x, bound) for x in e))
    if not isinstance(e, dict):
        return set()
    if e.get("class") == "COLUMN_REF":
        return {e["column_names"][-1]} - bound
    if e.get("class") == "LAMBDA":
        return _free_names(e["expr"], bound | set(_lambda_params(e)))
    return set().union(*(_free_names(v, bound) for v in e.values()))


@functools.lru_cache(maxsize=256)
def growth(where: str) -> Growth:
    """The bounds of the values a SQL filter builds (see the module's docstring); checked by check_sql first."""
    g = Growth()
    try:
        g.size(_parse(_wrapped(where))["statements"][0]["node"]["select_list"][0], {})
    except RecursionError:
        raise _too_deep(where) from None
    return g


def check_growth(where: str, table: pa.Table) -> None:
    """Refuse, naming the function, a filter that would build values past MAX_VALUE_BYTES (and LINEAR_GROWTH times
    the largest attribute value it reads) on the attributes of `table`."""
    g = growth(where)
    if not g.built:
        return
    largest = max((_largest(table.column(c)) for c in g.columns if c in table.column_names), default=1)
    limit = max(MAX_VALUE_BYTES, LINEAR_GROWTH * largest) + len(where)  # constants come from the text itself
    for b, name in g.built.items():
        if (size := _at(dict(b), largest)) > limit:
            read = ", ".join(sorted(g.columns)) or "none"
            raise InputError(f"where={where!r}: {name}() could build values of {size:.3g} bytes a row on these "
                             f"attributes (the largest value of those it reads, {read}, is {largest:,} bytes), past "
                             f"the {limit:,} a filter may build; nest fewer functions that multiply a value's size "
                             "(repeat, replace, regexp_replace, url_encode, array_to_string, list_transform) or "
                             "apply them to shorter values")


def _largest(col) -> int:
    """Bytes of the largest value of a column (at least 1): a list's as its length times its largest element."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    return max((_largest_in(c) for c in chunks if len(c)), default=1)


def _largest_in(a: pa.Array) -> int:
    t = a.type
    if pa.types.is_dictionary(t):
        return _largest_in(a.dictionary) if len(a.dictionary) else 1
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or \
            pa.types.is_large_binary(t):
        return max(pc.max(pc.binary_length(a)).as_py() or 0, 1)
    if pa.types.is_map(t):
        return max(pc.max(pc.list_value_length(a)).as_py() or 0, 1) * (_largest(a.keys) + _largest(a.items))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return max(pc.max(pc.list_value_length(a)).as_py() or 0, 1) * _largest(a.flatten())
    if pa.types.is_struct(t):
        return max(sum(_largest(a.field(i)) for i in range(t.num_fields)), 1)
    try:
        return max(t.bit_width // 8, 1)
    except ValueError:  # no fixed width
        return 16


_NAN_FREE: dict[int, tuple[weakref.ref, pa.Table | None]] = {}  # id(table): (table, its NaN-free copy or None)


def nan_as_null(table: pa.Table) -> pa.Table:
    """`table` with NaN in its float columns made NULL: one meaning of NaN on the SQL and pyarrow paths. Made once
    per table (a shard's attributes are evaluated once per predicate) and kept while the table lives."""
    hit = _NAN_FREE.get(id(table))
    if hit is not None and hit[0]() is table:
        return table if hit[1] is None else hit[1]
    out = table
    for i, f in enumerate(table.schema):
        if pa.types.is_floating(f.type):
            col = table.column(i)
            if pc.any(pc.is_nan(col)).as_py():
                out = out.set_column(i, f, pc.if_else(pc.is_nan(col), pa.scalar(None, f.type), col))
    _NAN_FREE[id(table)] = (weakref.ref(table, lambda _, k=id(table): _NAN_FREE.pop(k, None)),
                            None if out is table else out)
    return out


def row_mask(table: pa.Table, where, seconds: float = FILTER_SECONDS) -> np.ndarray:
    """A bool per row of `table`: the predicate is true (NULL is false); NaN attributes count as NULL."""
    table = nan_as_null(table)
    if isinstance(where, pc.Expression):
        try:
            col = ds.dataset(table).to_table(columns={"m": where}).column(0)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise InputError(f"where={where}: {e} (attributes: {_columns(table)})") from None
    else:
        import duckdb

        check_sql(where, tuple(table.column_names))
        check_growth(where, table)
        # no file or network access, so no extension loads: without ICU, time zones compare in UTC on every node
        con = duckdb.connect(config={"enable_external_access": False})
        timer = threading.Timer(seconds, con.interrupt)
        try:
            con.execute("SET enable_progress_bar = false")  # a slow filter prints nothing on the server's stdout
            con.register("attrs", table)
            timer.start()
            col = con.sql(_wrapped(where)).to_arrow_table().column(0)
        except duckdb.InterruptException:
            raise InputError(f"where={where!r}: evaluating it took longer than {seconds:g} s; write a simpler "
                             "condition") from None
        except duckdb.Error as e:
            first = str(e).splitlines()[0]
            raise InputError(f"where={where!r}: {first} (attributes: {_columns(table)})") from None
        finally:
            timer.cancel()
            con.close()
    if len(col) != table.num_rows:
        raise InputError(f"where={where!r} gives {len(col)} values for {table.num_rows} rows; write a condition on "
                         "each row's attributes (no aggregates or subqueries)")
    if not pa.types.is_boolean(col.type):
        raise InputError(f"where={where!r} gives {col.type} values, not true or false; write a condition such as "
                         "\"year >= 2020\"")
    return col.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


def _columns(table: pa.Table) -> str:
    return ", ".join(f"{f.name} {f.type}" for f in table.schema)
