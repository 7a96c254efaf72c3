"""The Lua scripts of the Redis tier; each runs atomically inside Redis.

Layout of one namespace ``{p}`` (the braces make it one Redis Cluster hash slot):

* ``{p}:d:<name>``: a hash ``{v: signed blob, g: tag generations as JSON}`` with the
  entry's TTL. ``g`` is ``[[tag key, generation], ...]`` or ``""``.
* ``{p}:t:<tag>``: a tag's generation counter. ``invalidate_tags`` is one ``INCR``;
  an entry stored under an older generation reads as a miss (nothing is scanned).
* ``{p}:l:<name>``: a fill lease: a random token with an expiry. Whoever holds it runs
  the factory; every write or delete of the key removes it, so a fill that raced a
  delete cannot store its (stale) value ("Scaling Memcache at Facebook", NSDI 2013).
"""

from __future__ import annotations

__all__ = ("ACQUIRE", "GET", "RELEASE", "SET", "STORE")

# Shared by GET and ACQUIRE: is the entry's every tag at the generation it was stored at?
_FRESH = """
local function fresh(g)
  if not g or g == '' then return true end
  for _, pair in ipairs(cjson.decode(g)) do
    if tonumber(redis.call('GET', pair[1]) or '0') ~= pair[2] then return false end
  end
  return true
end
"""

#: KEYS: data keys. Returns {blob, pttl, blob, pttl, ...}; a miss is (nil, -2).
GET = (
    _FRESH
    + """
local out = {}
for _, k in ipairs(KEYS) do
  local r = redis.call('HMGET', k, 'v', 'g')
  if r[1] and fresh(r[2]) then
    out[#out + 1] = r[1]
    out[#out + 1] = redis.call('PTTL', k)
  else
    out[#out + 1] = false
    out[#out + 1] = -2
  end
end
return out
"""
)

#: A plain (write-behind or write-through) set. KEYS: data, lease.
#: ARGV: blob, ttl in ms (0 = no expiry), tag keys... Records the tags' generations now.
SET = """
local gens = {}
for i = 3, #ARGV do
  gens[#gens + 1] = {ARGV[i], tonumber(redis.call('GET', ARGV[i]) or '0')}
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'g', #gens > 0 and cjson.encode(gens) or '')
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

#: Read or lease. KEYS: data, lease. ARGV: token, lease ms, tag keys...
#: Returns {2, blob, pttl} (a value is there), {1, gens json, 0} (lease granted: run
#: the factory), or {0, '', lease pttl} (someone else holds the lease: wait).
ACQUIRE = (
    _FRESH
    + """
local r = redis.call('HMGET', KEYS[1], 'v', 'g')
if r[1] and fresh(r[2]) then return {2, r[1], redis.call('PTTL', KEYS[1])} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local gens = {}
  for i = 3, #ARGV do
    gens[#gens + 1] = {ARGV[i], tonumber(redis.call('GET', ARGV[i]) or '0')}
  end
  return {1, #gens > 0 and cjson.encode(gens) or '', 0}
end
return {0, '', redis.call('PTTL', KEYS[2])}
"""
)

#: Store a leased fill. KEYS: data, lease. ARGV: token, blob, ttl ms, gens json.
#: Returns 1 if stored; 0 if the lease was lost (a write, delete or expiry took it) or
#: a tag was invalidated since the lease was granted; then nothing is stored.
STORE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
if ARGV[4] ~= '' then
  for _, pair in ipairs(cjson.decode(ARGV[4])) do
    if tonumber(redis.call('GET', pair[1]) or '0') ~= pair[2] then return 0 end
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'g', ARGV[4])
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""

#: Give a lease back (the factory raised). KEYS: lease. ARGV: token.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
