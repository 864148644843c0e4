//! The Lua scripts: the operations that must read and write atomically. Every key a script
//! touches is passed in `KEYS` (never built inside the script) and shares one hash tag, as
//! Redis Cluster requires.

use std::sync::LazyLock;

use redis::Script;

/// Deletes up to ARGV[2] entries whose expiry (ms) is at or before ARGV[1].
/// KEYS: entries, index, expiry. Returns how many it deleted.
const PURGE_BODY: &str = r"
local function purge(now, limit)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)
  if #gone > 0 then
    redis.call('HDEL', KEYS[1], unpack(gone))
    redis.call('ZREM', KEYS[2], unpack(gone))
    redis.call('ZREM', KEYS[3], unpack(gone))
  end
  return #gone
end
";

pub(super) static PURGE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{PURGE_BODY}\nreturn purge(ARGV[1], ARGV[2])")));

/// One page of a scope: purges expired entries first, then returns `{addresses, values}`.
/// KEYS: entries, index, expiry. ARGV: now ms, purge limit, lexical start, page size.
pub(super) static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PURGE_BODY}
purge(ARGV[1], ARGV[2])
local addrs = redis.call('ZRANGE', KEYS[2], ARGV[3], '+', 'BYLEX', 'LIMIT', 0, ARGV[4])
if #addrs == 0 then return {{{{}}, {{}}}} end
return {{addrs, redis.call('HMGET', KEYS[1], unpack(addrs))}}
"
    ))
});

/// Removes addresses; returns how many of them were in force.
/// KEYS: entries, index, expiry. ARGV: now ms, addresses…
pub(super) static UNSUPPRESS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  local a = ARGV[i]
  if redis.call('HDEL', KEYS[1], a) == 1 then
    local e = redis.call('ZSCORE', KEYS[3], a)
    if not e or tonumber(e) > now then n = n + 1 end
    redis.call('ZREM', KEYS[2], a)
    redis.call('ZREM', KEYS[3], a)
  end
end
return n
",
    )
});

/// Records a bounce. A hard one (ARGV[1] = '1') suppresses at once; a soft one joins the
/// address's sliding window and suppresses when the window holds ARGV[4] bounces. Either
/// way a suppression empties the window, so the window never holds more than the threshold
/// and each run of ARGV[4] concurrent soft bounces suppresses once.
/// Returns `{soft bounces, suppressed 0/1}`. KEYS: entries, index, expiry, soft bounces.
/// ARGV: hard, now ms, window ms, threshold, unique member, address, encoded entry.
pub(super) static RECORD_BOUNCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now, window, address = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[6]
local function suppress()
  redis.call('HSET', KEYS[1], address, ARGV[7])
  redis.call('ZADD', KEYS[2], 0, address)
  redis.call('ZREM', KEYS[3], address)
  redis.call('DEL', KEYS[4])
end
if ARGV[1] == '1' then
  suppress()
  return {0, 1}
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[5])
local n = redis.call('ZCARD', KEYS[4])
if n >= tonumber(ARGV[4]) then
  suppress()
  return {n, 1}
end
redis.call('PEXPIRE', KEYS[4], window)
return {n, 0}
",
    )
});

/// Appends history entries, keeping the first and the newest ARGV[1] - 1, and refreshes
/// the TTL. KEYS: the list. ARGV: max entries, ttl ms, then the entries (at least one), in
/// order. Trimming once after all of them keeps the same entries as trimming after each.
/// Entries equal to the list's tail are not appended again: a settle retried after an
/// ambiguous error (the reply lost, the write done) sends the same entries (each carries its
/// time in nanoseconds), and the history would show them twice.
pub(super) const TRACK_SOURCE: &str = r"
local max = tonumber(ARGV[1])
local count = #ARGV - 2
if count <= max - 1 then
  local tail = redis.call('LRANGE', KEYS[1], -count, -1)
  if #tail == count then
    local same = true
    for i = 1, count do
      if tail[i] ~= ARGV[i + 2] then same = false break end
    end
    if same then
      redis.call('PEXPIRE', KEYS[1], ARGV[2])
      return redis.call('LLEN', KEYS[1])
    end
  end
end
local n = redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
if n > max then
  local first = redis.call('LPOP', KEYS[1])
  redis.call('LTRIM', KEYS[1], 1 - max, -1)
  redis.call('LPUSH', KEYS[1], first)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
";

pub(super) static TRACK: LazyLock<Script> = LazyLock::new(|| Script::new(TRACK_SOURCE));

/// Releases an idempotency key only while it is pending. KEYS: the key. Returns 0/1.
pub(super) static RELEASE_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == 'P' then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Resumes a domain; returns 1 if a pause in force was removed. KEYS: pauses hash.
/// ARGV: domain, now ns (as a decimal string; compared with the stored `until`).
pub(super) static RESUME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local untilns = string.match(v, '^(%d*)\t')
if untilns == nil or untilns == '' then return 1 end
if tonumber(untilns) > tonumber(ARGV[2]) then return 1 end
return 0
",
    )
});

/// Pauses a domain and deletes the pauses that have expired. KEYS: pauses hash.
/// ARGV: domain, encoded pause, now ns.
pub(super) static PAUSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local untilns = string.match(all[i + 1], '^(%d+)\t')
  if untilns and tonumber(untilns) <= now then redis.call('HDEL', KEYS[1], all[i]) end
end
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
",
    )
});
