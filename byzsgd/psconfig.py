"""The one message a byzsgd parameter server accepts, and the key layout
workers and servers share.

Stock MXNet servers unpickle whatever a worker sends as the optimizer
(``kvstore.set_optimizer``), which lets any worker run code on them. A
byzsgd server accepts instead one plain JSON object, checked field by field
by :func:`parse`: a registered aggregation rule and its parameters, a
registered MXNet optimizer and scalar parameters, the cluster shape, and an
optional server-side attack (a faulty server). Nothing in it is executed.

Layout: the workers' flattened gradient (d float32 values, all parameters
in the trainer's order) is cut into blocks. Coordinate-wise rules
(:data:`COORDINATE_WISE`) get one block per server (``np.array_split``,
the gambler attack's sharding), so S servers aggregate d/S coordinates each
with no extra communication (the paper's Section 6). Every other rule needs
whole vectors: one block, on server 0. Each worker pushes block b to its
own key ``table[b][w]``, so a server knows which worker a row came from
(ps-lite does not tell) and keeps rows in worker order; workers pull the
new weights from ``table[b][0]``. MXNet places a key k on server
``(k * 9973) % S`` (kvstore_dist.h, arrays under
MXNET_KVSTORE_BIGARRAY_BOUND, which byzsgd raises so that no block is
sliced): :func:`key_table` picks keys landing on each block's server.

Pure python + numpy; the server checks optimizer names itself (it has mxnet).
"""
import json

import numpy as np

from .checks import is_real

__all__ = ["FORMAT", "COORDINATE_WISE", "ConfigError", "placement_of", "blocks",
           "key_table", "make", "parse", "BIGARRAY_BOUND"]

FORMAT = "byzsgd.psconfig/1"
#: rules whose output in coordinate j depends only on column j: safe to shard
COORDINATE_WISE = frozenset({"mean", "marmed", "meamed", "trmean", "phocas"})
#: MXNET_KVSTORE_BIGARRAY_BOUND set for every process: no key is sliced
BIGARRAY_BOUND = 2 ** 31 - 1
MAX_MESSAGE = 64 * 1024
MODES = ("aggregate", "store")
_FIELDS = {"format", "mode", "rule", "rule_params", "optimizer", "optimizer_params",
           "num_workers", "num_servers", "d", "placement", "server_attack", "timeout"}
_ATTACK_FIELDS = {"attack", "params", "servers", "seed"}


class ConfigError(ValueError):
    """A configuration message a byzsgd server refuses."""


def placement_of(rule):
    """'sharded' for a coordinate-wise rule name, else 'whole' (one server)."""
    return "sharded" if rule in COORDINATE_WISE else "whole"


def blocks(d, servers, placement):
    """[(start, stop, server)] of the non-empty blocks of a d-vector."""
    if placement == "whole":
        return [(0, int(d), 0)]
    # np.array_split's sizes, without an index array of d entries (d comes
    # from a worker's message and may be up to 2**31 - 1)
    q, r = divmod(int(d), int(servers))
    cuts = np.cumsum([0] + [q + 1] * r + [q] * (int(servers) - r))
    return [(int(a), int(b), s) for s, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])) if b > a]


def key_table(block_servers, n, servers):
    """(blocks, n) int keys: row b holds worker w's key for block b, each key
    on server ``block_servers[b]`` by MXNet's rule ``(k * 9973) % servers``."""
    need = {s: n * list(block_servers).count(s) for s in range(servers)}
    pools = {s: [] for s in range(servers)}
    k = 0
    while any(len(pools[s]) < need[s] for s in pools):
        s = (k * 9973) % servers
        if len(pools[s]) < need[s]:
            pools[s].append(k)
        k += 1
    return [[pools[s].pop(0) for _ in range(n)] for s in block_servers]


def make(rule, rule_params, optimizer, optimizer_params, num_workers, num_servers, d,
         server_attack=None, timeout=60.0, mode="aggregate"):
    """The configuration message (a JSON string) for the servers; checked by
    :func:`parse` before it is returned, so a worker fails before sending."""
    text = json.dumps({
        "format": FORMAT, "mode": mode, "rule": rule, "rule_params": dict(rule_params or {}),
        "optimizer": optimizer, "optimizer_params": dict(optimizer_params or {}),
        "num_workers": num_workers, "num_servers": num_servers, "d": d,
        "placement": placement_of(rule), "server_attack": server_attack,
        "timeout": timeout}, sort_keys=True, allow_nan=False)
    parse(text)
    return text


def _scalar(value):
    return value is None or isinstance(value, (bool, int, float, str))


def _plain_params(what, params):
    """A dict of JSON scalars (or lists of them): nothing that could name code."""
    if not isinstance(params, dict):
        raise ConfigError(f"{what} must be a JSON object, got {params!r}")
    for k, v in params.items():
        if not (_scalar(v) or (isinstance(v, list) and all(_scalar(x) for x in v))):
            raise ConfigError(f"{what}[{k!r}]={v!r}: only numbers, strings, booleans, "
                              "null and lists of them are accepted")
    return params


def _count(what, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < low \
            or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{what} must be an integer {bound}, got {value!r}")
    return value


def parse(text, num_servers=None, num_workers=None):
    """The checked configuration dict of message ``text``; ConfigError
    (naming the field, the value and the limit) for anything else.

    ``num_servers``, ``num_workers``: the cluster's counts, which the message
    must match (checked before the rule runs on an (n, 1) probe: a claimed
    n of 100000 would allocate a 100000 x 100000 distance matrix).
    Optimizer names are checked by the server (see byzsgd.psserver).
    """
    from . import aggregators   # here: the scheduler imports this module too
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError("the message is not UTF-8 text (a pickle?)") from None
    if len(text) > MAX_MESSAGE:
        raise ConfigError(f"the message has {len(text)} characters, more than {MAX_MESSAGE}")
    try:
        cfg = json.loads(text, parse_constant=lambda c: _refuse_constant(c))
    except (ValueError, RecursionError) as err:
        raise ConfigError(f"the message is not byzsgd JSON ({err}); stock MXNet sends a "
                          "pickled optimizer here, which byzsgd servers never unpickle") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ConfigError(f"the message is not a {FORMAT} object")
    if set(cfg) != _FIELDS:
        raise ConfigError(f"fields {sorted(set(cfg) ^ _FIELDS)} missing or unknown; "
                          f"expected exactly {sorted(_FIELDS)}")
    if cfg["mode"] not in MODES:
        raise ConfigError(f"mode={cfg['mode']!r} must be one of {', '.join(MODES)}")
    n = _count("num_workers", cfg["num_workers"], 1, 100000)
    servers = _count("num_servers", cfg["num_servers"], 1, 10000)
    if num_servers is not None and servers != num_servers:
        raise ConfigError(f"num_servers={servers} but this cluster has {num_servers} servers")
    if num_workers is not None and n != num_workers:
        raise ConfigError(f"num_workers={n} but this cluster has {num_workers} workers")
    _count("d", cfg["d"], 1, 2 ** 31 - 1)
    t = cfg["timeout"]
    if not is_real(t) or not 0 < t <= 86400:
        raise ConfigError(f"timeout={t!r} must be a number of seconds in (0, 86400]")
    if not isinstance(cfg["rule"], str) or cfg["rule"] not in aggregators.REGISTRY:
        raise ConfigError(f"unknown aggregation rule {cfg['rule']!r}; valid names: "
                          f"{', '.join(aggregators.names())}")
    params = _plain_params("rule_params", cfg["rule_params"])
    try:
        aggregators.validate((cfg["rule"], params), n)
    except Exception as err:   # noqa: BLE001 - whatever a message's values make a rule do
        raise ConfigError(f"rule {cfg['rule']!r} with {params}: "
                          f"{type(err).__name__}: {err}") from None
    if cfg["placement"] != placement_of(cfg["rule"]):
        raise ConfigError(f"placement={cfg['placement']!r} for rule {cfg['rule']!r}: "
                          f"only {sorted(COORDINATE_WISE)} may be sharded across servers; "
                          "the others need whole vectors on one server")
    if not isinstance(cfg["optimizer"], str):
        raise ConfigError(f"optimizer must be a name, got {cfg['optimizer']!r}")
    _plain_params("optimizer_params", cfg["optimizer_params"])
    cfg["server_attack"] = _server_attack(cfg["server_attack"], n, servers,
                                          blocks(cfg["d"], servers, cfg["placement"]))
    return cfg


def _refuse_constant(c):
    raise ValueError(f"{c} is not a number byzsgd accepts")


def _server_attack(spec, n, servers, spans=()):
    """None, or {"attack", "params", "servers", "seed"}: the attack the listed
    (faulty) servers apply to the (n, block) matrix of their shard (``spans``:
    the blocks, see :func:`blocks`); run once on a zero matrix as wide as
    the smallest faulty block (at most 2**24 cells), as rules are probed."""
    from . import attacks
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) != _ATTACK_FIELDS:
        raise ConfigError(f"server_attack must be null or an object with exactly "
                          f"{sorted(_ATTACK_FIELDS)}, got {spec!r}")
    if not isinstance(spec["attack"], str) or spec["attack"] not in attacks.REGISTRY:
        raise ConfigError(f"unknown attack {spec['attack']!r}; valid names: "
                          f"{', '.join(attacks.names())}")
    params = _plain_params("server_attack.params", spec["params"])
    try:
        attack = attacks.get(spec["attack"], **params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"server attack {spec['attack']!r}: {err}") from None
    faulty = spec["servers"]
    if not isinstance(faulty, list) or not faulty:
        raise ConfigError(f"server_attack.servers must be a non-empty list, got {faulty!r}")
    for s in faulty:
        _count("server_attack.servers[]", s, 0, servers - 1)
    _count("server_attack.seed", spec["seed"], 0, 2 ** 63 - 1)
    idle = sorted(set(faulty) - {server for _, _, server in spans})
    if spans and idle:   # it would log FAULTY and corrupt nothing
        raise ConfigError(f"server_attack.servers {idle} hold no block of the parameters "
                          f"(blocks on servers {sorted({s for _, _, s in spans})}; a vector "
                          "rule keeps them all on server 0): a faulty server there attacks "
                          "nothing")
    sizes = [b - a for a, b, server in spans if server in faulty]
    if sizes:
        probe_cols = max(1, min(min(sizes), 2 ** 24 // n))
        try:
            attack(np.zeros((n, probe_cols), np.float32), np.random.default_rng(0))
        except Exception as err:   # noqa: BLE001 - refused here, not at the first round
            raise ConfigError(f"server attack {spec['attack']!r} with {params} on an (n={n}, "
                              f"{probe_cols}) shard: {type(err).__name__}: {err}") from None
    return spec
