-- GCRA of one bucket, computed in Redis so that every Gatehouse instance
-- naming this store and limit counts against the same bucket. The same
-- algorithm as governor (the local limiter): a bucket is its theoretical
-- arrival time (TAT); a request is admitted unless TAT - tau lies ahead.
--
-- KEYS[1]  the bucket, "gatehouse:rl:{limit}:{key}"
-- ARGV[1]  the emission interval t: microseconds per request (may be fractional)
-- ARGV[2]  the burst (bucket size), at least 1
--
-- Returns {allowed (1|0), remaining, wait}: remaining requests of the burst
-- after this one (allowed), or the microseconds until one is admitted (refused).
-- The clock is the server's TIME: one clock for every instance.

if redis.replicate_commands then
  redis.replicate_commands() -- Redis < 5: allow a write after TIME
end
local t = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tau = t * (burst - 1)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local earliest = tat - tau
if now < earliest then
  return {0, 0, math.ceil(earliest - now)}
end
local next_tat = math.max(tat, now) + t
-- The key expires when its bucket is full again: idle keys vanish.
local ttl_ms = math.max(1, math.ceil((next_tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%.3f', next_tat), 'PX', ttl_ms)
-- As governor's remaining_burst_capacity, with room for float rounding.
local remaining = math.floor(math.min(now + tau + t - next_tat, tau + t) / t + 1e-6)
return {1, remaining, 0}
