package verify

import (
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chiSquare returns the statistic of counts against a uniform distribution.
func chiSquare(counts map[byte]int, categories, total int) float64 {
	expected := float64(total) / float64(categories)
	var x2 float64
	for _, n := range counts {
		d := float64(n) - expected
		x2 += d * d / expected
	}
	// Categories never drawn count too.
	x2 += float64(categories-len(counts)) * expected
	return x2
}

// uniformity draws codes from gen and returns the chi-square statistic of
// each position and of all characters together, against a uniform
// distribution over alphabet.
func uniformity(t *testing.T, draws int, alphabet string, gen func() (string, error)) (perPosition []float64, overall float64) {
	t.Helper()
	var perPos []map[byte]int
	all := map[byte]int{}
	total := 0
	for range draws {
		code, err := gen()
		require.NoError(t, err)
		for len(perPos) < len(code) {
			perPos = append(perPos, map[byte]int{})
		}
		for i := 0; i < len(code); i++ {
			require.True(t, strings.IndexByte(alphabet, code[i]) >= 0, "character %q outside the charset", code[i])
			perPos[i][code[i]]++
			all[code[i]]++
			total++
		}
	}
	for _, counts := range perPos {
		perPosition = append(perPosition, chiSquare(counts, len(alphabet), draws))
	}
	return perPosition, chiSquare(all, len(alphabet), total)
}

const draws = 60000

// Chi-square critical values at p = 0.0001 for 9 and 31 degrees of freedom.
const critical9, critical31 = 33.72, 66.62

// TestGeneratedCodesAreUniform checks, per position and overall, that
// generated characters are uniform by a chi-square test at p = 0.0001: a
// fair generator fails about once in ten thousand runs, while the biased
// ones in TestChiSquareDetectsBias fail every time.
func TestGeneratedCodesAreUniform(t *testing.T) {
	cases := []struct {
		cs         Charset
		alphabet   string
		critical   float64
		codeLength int
	}{
		{Numeric, "0123456789", critical9, 6},
		{Alphanumeric, alphanumericSet, critical31, 8},
	}
	for _, c := range cases {
		t.Run(c.cs.String(), func(t *testing.T) {
			perPos, overall := uniformity(t, draws, c.alphabet, func() (string, error) {
				return generateCode(c.codeLength, c.cs)
			})
			require.Len(t, perPos, c.codeLength)
			for i, x2 := range perPos {
				assert.Less(t, x2, c.critical, "position %d is not uniform: chi-square %.2f", i, x2)
			}
			assert.Less(t, overall, c.critical, "characters are not uniform: chi-square %.2f", overall)
		})
	}
}

// TestChiSquareDetectsBias makes sure the test above can fail: digits drawn
// as byte%10 over all 256 byte values (favouring 0-5 by 26 to 25), and a
// generator stuck on one character, are both caught.
func TestChiSquareDetectsBias(t *testing.T) {
	modulo := func() (string, error) {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		for i := range b {
			b[i] = '0' + b[i]%10
		}
		return string(b[:]), nil
	}
	_, overall := uniformity(t, draws, "0123456789", modulo)
	assert.Greater(t, overall, critical9, "modulo bias is detected")

	stuck := func() (string, error) {
		c, err := generateCode(6, Numeric)
		return c[:5] + "7", err
	}
	perPos, _ := uniformity(t, 1000, "0123456789", stuck)
	assert.Greater(t, perPos[5], critical9, "a constant position is detected")
}

func TestGenerateCodeLengths(t *testing.T) {
	for n := minCodeLength; n <= maxCodeLength; n++ {
		code, err := generateCode(n, Numeric)
		require.NoError(t, err)
		assert.Len(t, code, n)
	}
	distinct := map[string]bool{}
	for range 1000 {
		c, _ := generateCode(10, Numeric)
		distinct[c] = true
	}
	assert.Greater(t, len(distinct), 990, "codes repeat far too often")
}

func TestKeyring(t *testing.T) {
	a := []byte("0123456789abcdef0123456789abcdef")
	b := []byte("fedcba9876543210fedcba9876543210")
	kr, err := newKeyring([][]byte{a})
	require.NoError(t, err)
	h, sealed, err := kr.protect("id-1", "123456")
	require.NoError(t, err)
	assert.True(t, MatchHash(h, kr.hashes("id-1", "123456")))
	assert.False(t, MatchHash(h, kr.hashes("id-1", "123457")))
	assert.False(t, MatchHash(h, kr.hashes("id-2", "123456")), "the HMAC is bound to the verification ID")
	assert.False(t, MatchHash(h[:16], kr.hashes("id-1", "123456")))

	assert.NotContains(t, string(sealed), "123456")
	code, err := kr.unseal("id-1", sealed)
	require.NoError(t, err)
	assert.Equal(t, "123456", code)
	_, err = kr.unseal("id-2", sealed)
	assert.Error(t, err, "a sealed code is bound to its verification ID")
	_, err = kr.unseal("id-1", sealed[:5])
	assert.Error(t, err)

	rotated, err := newKeyring([][]byte{b, a})
	require.NoError(t, err)
	assert.True(t, MatchHash(h, rotated.hashes("id-1", "123456")), "old keys still check")
	code, err = rotated.unseal("id-1", sealed)
	require.NoError(t, err)
	assert.Equal(t, "123456", code, "old keys still unseal")
	h2, _, err := rotated.protect("id-1", "123456")
	require.NoError(t, err)
	assert.False(t, bytesEqual(h2, h), "the first key hashes new codes")

	hs := rotated.hashes("id-1", "123456")
	require.Len(t, hs, 2)
	assert.Equal(t, h2, hs[0], "the current key's hash comes first")
	assert.Equal(t, h, hs[1])
	hs[0][0] ^= 1
	assert.Equal(t, h, hs[1], "the hashes do not share bytes")

	onlyB, err := newKeyring([][]byte{b})
	require.NoError(t, err)
	assert.False(t, MatchHash(h, onlyB.hashes("id-1", "123456")))
	_, err = onlyB.unseal("id-1", sealed)
	assert.ErrorContains(t, err, "WithSecret")
}

// TestKeyringAllocations: sealing a code takes one allocation (the hash,
// the sealed code and the sealing's input share it), and hashing one for a
// single key one; the shared bytes do not overlap where a caller can
// append.
func TestKeyringAllocations(t *testing.T) {
	kr, err := newKeyring([][]byte{[]byte("0123456789abcdef0123456789abcdef")})
	require.NoError(t, err)
	// Under the race detector the HMAC states' pool allocates; .ci/run
	// runs this test without it too.
	if !raceEnabled {
		assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _, _, _ = kr.protect("id-1", "123456") }), "protect")
		assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _ = kr.hashes("id-1", "123456") }), "hashes")
	}

	h, sealed, err := kr.protect("id-1", "123456")
	require.NoError(t, err)
	assert.Equal(t, len(h), cap(h), "the hash's capacity ends at its length")
	assert.Equal(t, len(sealed), cap(sealed), "the sealed code's capacity ends at its length")
	_ = append(h, "appended after the hash"...)
	_ = append(sealed, "appended after the sealed code"...)
	code, err := kr.unseal("id-1", sealed)
	require.NoError(t, err)
	assert.Equal(t, "123456", code)
	assert.True(t, MatchHash(h, kr.hashes("id-1", "123456")))
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

func TestNormalizeCode(t *testing.T) {
	for in, want := range map[string]string{"abc123": "ABC123", "ABC": "ABC", "123": "123", "aZ9": "AZ9"} {
		got, ok := normalizeCode(in)
		assert.True(t, ok)
		assert.Equal(t, want, got)
	}
	for _, bad := range []string{"a b", "é1", "12-3", "", "１"} {
		if bad == "" {
			continue
		}
		_, ok := normalizeCode(bad)
		assert.False(t, ok, bad)
	}
}

func TestRender(t *testing.T) {
	assert.Equal(t, "Acme 42 in 3 {x} Acme {", render("{brand} {code} in {minutes} {x} {app} {", "42", 3, "Acme"))
	assert.Equal(t, "no placeholders", render("no placeholders", "42", 3, ""))
	assert.Equal(t, "42}", render("{token}}", "42", 3, ""))
}

// TestNewIDTimeOrdered: verification IDs are version 7 UUIDs of the
// engine's clock, so that a later verification's ID sorts after an
// earlier one's (the databases' indexes on it take inserts at one end),
// and distinct within a millisecond.
func TestNewIDTimeOrdered(t *testing.T) {
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	seen := make(map[string]bool)
	prev := ""
	for i := range 2000 {
		now := at.Add(time.Duration(i/100) * time.Millisecond) // 100 IDs a millisecond
		id, err := newID(now)
		require.NoError(t, err)
		u, err := uuid.Parse(id)
		require.NoError(t, err)
		require.Equal(t, uuid.Version(7), u.Version(), id)
		require.Equal(t, uuid.RFC4122, u.Variant(), id)
		sec, nsec := u.Time().UnixTime()
		require.Equal(t, now.UnixMilli(), time.Unix(sec, nsec).UnixMilli(), "the ID's time is the clock's: %s", id)
		require.False(t, seen[id], "duplicate ID %s", id)
		seen[id] = true
		if i%100 == 0 && prev != "" {
			require.Less(t, prev, id, "an ID of a later millisecond sorts after")
		}
		prev = id
	}
}
