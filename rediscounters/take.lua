-- Take: all or nothing, as verify.ApplyTakes decides.
-- KEYS[i]: the i-th take's counter, a hash of v (value), u (updated),
-- e (expires) and n (not before); times in microseconds, 0 for none.
-- ARGV[1]: now; ARGV[2]: the grace period kept past expiry.
-- ARGV[3+6(i-1) ...]: delta, max (-1: no limit), expires, backoff free,
-- base and max (nanoseconds, as verify.Backoff doubles them).
-- Returns {ok, refused index (0-based, -1 when ok), retry after, then
-- v, u, e, n of each counter after the take (as they were when refused)}.
--
-- Numbers go to Redis as Lua numbers: redis.call writes an integral one
-- below 10^17 as its digits (Redis writes larger ones with an exponent),
-- where string.format or tostring would cost more, or lose digits. Times
-- stay far below that, and a Take that would count a value past 2^53,
-- beyond which a Lua number is no longer exact, fails with an error
-- before anything is written (a refused one is refused as ever). What the
-- script parses it parses once, and only where it is needed: a backoff
-- whose base is 0, a max of -1 and a counter a take leaves alone are not.
-- A counter that keeps its expiry keeps its Redis expiry too.
local tonumber, mmax, mmin, floor, ceil = tonumber, math.max, math.min, math.floor, math.ceil
local keys, argv = KEYS, ARGV
local now = tonumber(argv[1])
local grace = tonumber(argv[2])

-- delay is verify.Backoff's: 0 before free failures, then base doubled
-- per failure up to max (nanoseconds).
local function delay(n, a)
	if argv[a + 4] == '0' then return 0 end
	local free, base, limit = tonumber(argv[a + 3]), tonumber(argv[a + 4]), tonumber(argv[a + 5])
	if base <= 0 or n < free then return 0 end
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

local maxExact = 9007199254740991 -- 2^53 - 1
local n = #keys
local v, u, e, nb, stored, deltas = {}, {}, {}, {}, {}, {}
local refused, wait = -1, 0
for i = 1, n do
	local a = 3 + 6 * (i - 1)
	local delta = tonumber(argv[a])
	deltas[i] = delta
	local f = redis.call('HMGET', keys[i], 'v', 'u', 'e', 'n')
	local cv, cu, ce, cn = 0, 0, 0, 0
	if f[1] then
		ce = tonumber(f[3])
		stored[i] = ce
		if now < ce then
			cv, cu, cn = tonumber(f[1]), tonumber(f[2]), tonumber(f[4])
		else
			ce = 0
		end
	end
	v[i], u[i], e[i], nb[i] = cv, cu, ce, cn
	if delta >= 0 and refused < 0 then
		local w = 0
		if argv[a + 1] ~= '-1' and cv > tonumber(argv[a + 1]) - delta then
			w = mmax(ce - now, 1)
		end
		if now < cn then
			w = mmax(w, mmin(cn, ce) - now)
		end
		if w > 0 then refused, wait = i - 1, w end
	end
end

local out = {0, refused, wait}
if refused < 0 then
	for i = 1, n do
		if deltas[i] > 0 and v[i] + deltas[i] > maxExact then
			return redis.error_reply('counter ' .. keys[i] .. ' would pass 2^53')
		end
	end
	out[1] = 1
	for i = 1, n do
		local delta = deltas[i]
		if delta ~= 0 then
			local a = 3 + 6 * (i - 1)
			local key = keys[i]
			v[i] = mmax(v[i] + delta, 0)
			u[i] = now
			local d = delay(v[i], a)
			if delta > 0 then
				e[i] = tonumber(argv[a + 2])
				nb[i] = 0
				if d > 0 then nb[i] = now + floor(d / 1000) end
			elseif d == 0 then
				nb[i] = 0
			end
			if e[i] > now then
				redis.call('HSET', key, 'v', v[i], 'u', now, 'e', e[i], 'n', nb[i])
				if stored[i] ~= e[i] then
					redis.call('PEXPIRE', key, ceil((e[i] - now + grace) / 1000))
				end
			else
				redis.call('DEL', key)
			end
		end
	end
end
for i = 1, n do
	local o = #out
	out[o + 1], out[o + 2], out[o + 3], out[o + 4] = v[i], u[i], e[i], nb[i]
end
return out
