-- Take: all or nothing, as verify.ApplyTakes decides.
-- KEYS[i]: the i-th take's counter, a hash of v (value), u (updated),
-- e (expires) and n (not before); times in microseconds, 0 for none.
-- ARGV[1]: now; ARGV[2]: the grace period kept past expiry.
-- ARGV[3+6(i-1) ...]: delta, max (-1: no limit), expires, backoff free,
-- base and max (nanoseconds, as verify.Backoff doubles them).
-- Returns {ok, refused index (0-based, -1 when ok), retry after, then
-- v, u, e, n of each counter after the take (as they were when refused)}.
-- Numbers go to Redis as integers: redis.call would write a Lua number
-- with 14 significant digits, too few for a time in microseconds.
local function int(x) return string.format('%d', x) end

local now = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])

local function delay(n, free, base, bmax)
	if base <= 0 or n < free then return 0 end
	local limit = bmax
	if limit < base then limit = base end
	local d = base
	local i = n - free
	while i > 0 and d < limit do
		d = d * 2
		i = i - 1
	end
	if d > limit then d = limit end
	return d
end

local cur = {}
local refused, wait = -1, 0
for i, key in ipairs(KEYS) do
	local a = 3 + 6 * (i - 1)
	local delta, max = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
	local f = redis.call('HMGET', key, 'v', 'u', 'e', 'n')
	local c = {0, 0, 0, 0}
	if f[1] then
		c = {tonumber(f[1]), tonumber(f[2]), tonumber(f[3]), tonumber(f[4])}
	end
	if now >= c[3] then c = {0, 0, 0, 0} end
	cur[i] = c
	if delta >= 0 and refused < 0 then
		local w = 0
		if max ~= -1 and c[1] > max - delta then
			w = math.max(c[3] - now, 1)
		end
		if now < c[4] then
			w = math.max(w, math.min(c[4], c[3]) - now)
		end
		if w > 0 then refused, wait = i - 1, w end
	end
end

local out = {0, refused, wait}
if refused < 0 then
	out[1] = 1
	for i, key in ipairs(KEYS) do
		local a = 3 + 6 * (i - 1)
		local delta = tonumber(ARGV[a])
		if delta ~= 0 then
			local c = cur[i]
			c[1] = math.max(c[1] + delta, 0)
			c[2] = now
			local d = delay(c[1], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]))
			if delta > 0 then
				c[3] = tonumber(ARGV[a + 2])
				c[4] = 0
				if d > 0 then c[4] = now + math.floor(d / 1000) end
			elseif d == 0 then
				c[4] = 0
			end
			if c[3] > now then
				redis.call('HSET', key, 'v', int(c[1]), 'u', int(c[2]), 'e', int(c[3]), 'n', int(c[4]))
				redis.call('PEXPIRE', key, int(math.ceil((c[3] - now + grace) / 1000)))
			else
				redis.call('DEL', key)
			end
		end
	end
end
for i = 1, #KEYS do
	local c = cur[i]
	out[#out + 1] = c[1]
	out[#out + 1] = c[2]
	out[#out + 1] = c[3]
	out[#out + 1] = c[4]
end
return out
