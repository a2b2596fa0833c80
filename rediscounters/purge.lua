-- PurgeCounters' step: deletes, of KEYS, up to ARGV[2] counters whose
-- expiry (field e, microseconds) is before ARGV[1], checking each as it
-- deletes it. Returns how many it deleted.
local before, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local n = 0
for _, key in ipairs(KEYS) do
	if n >= limit then break end
	local e = tonumber(redis.call('HGET', key, 'e'))
	if e and e < before then
		redis.call('DEL', key)
		n = n + 1
	end
end
return n
