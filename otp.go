package verify

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

const (
	minCodeLength = 4
	maxCodeLength = 10
	// minSecretLen is the shortest secret WithSecret accepts.
	minSecretLen = 16
)

// alphanumericSet has 32 characters: upper-case letters and digits without
// 0, O, 1 and I. 32 divides 256, so a random byte masked to 5 bits is uniform.
const alphanumericSet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// generateCode returns a code of n characters from the charset, each drawn
// uniformly with crypto/rand. Digits use rejection sampling: bytes 250..255
// are discarded so that byte%10 has no bias.
func generateCode(n int, cs Charset) (string, error) {
	var out [maxCodeLength]byte
	var buf [32]byte
	filled := 0
	for filled < n {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", internalErr("reading crypto/rand", err)
		}
		for _, b := range buf {
			if filled == n {
				break
			}
			switch cs {
			case Alphanumeric:
				out[filled] = alphanumericSet[b&31]
				filled++
			default:
				if b < 250 {
					out[filled] = '0' + b%10
					filled++
				}
			}
		}
	}
	return string(out[:n]), nil
}

// normalizeCode upper-cases ASCII letters, so alphanumeric codes are checked
// case-insensitively. It reports false if code has a character outside
// [0-9A-Za-z].
func normalizeCode(code string) (string, bool) {
	lower := false
	for i := 0; i < len(code); i++ {
		c := code[i]
		switch {
		case c >= '0' && c <= '9', c >= 'A' && c <= 'Z':
		case c >= 'a' && c <= 'z':
			lower = true
		default:
			return "", false
		}
	}
	if !lower {
		return code, true
	}
	b := []byte(code)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b), true
}

// fitsCharset reports whether a normalized code is made of the charset's
// characters: digits for Numeric, [0-9A-Z] for Alphanumeric (custom codes
// may use the letters and digits that generated codes leave out).
func fitsCharset(code string, cs Charset) bool {
	for i := 0; i < len(code); i++ {
		c := code[i]
		if c >= '0' && c <= '9' {
			continue
		}
		if cs == Alphanumeric && c >= 'A' && c <= 'Z' {
			continue
		}
		return false
	}
	return true
}

// keyring derives a MAC key and a sealing key from each secret. The first
// secret's keys hash and seal new codes; every secret's keys check and
// unseal, so secrets can be rotated without breaking open verifications.
type keyring struct {
	keys []derivedKey
}

type derivedKey struct {
	mac  []byte
	aead cipher.AEAD
	pool *sync.Pool // of *macState keyed with mac
}

// macState is a keyed HMAC with a scratch buffer for its input, pooled so
// that hashing a code allocates nothing.
type macState struct {
	h   hash.Hash
	buf []byte
}

func newKeyring(secrets [][]byte) (*keyring, error) {
	kr := &keyring{}
	for i, s := range secrets {
		if len(s) < minSecretLen {
			return nil, fmt.Errorf("verify: secret %d is %d bytes; use at least %d random bytes", i, len(s), minSecretLen)
		}
		mac := derive(s, "openverify code hmac v1")
		block, err := aes.NewCipher(derive(s, "openverify code seal v1"))
		if err != nil {
			return nil, fmt.Errorf("verify: sealing key: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("verify: sealing key: %w", err)
		}
		kr.keys = append(kr.keys, derivedKey{
			mac:  mac,
			aead: aead,
			pool: &sync.Pool{New: func() any { return &macState{h: hmac.New(sha256.New, mac), buf: make([]byte, 0, 64)} }},
		})
	}
	return kr, nil
}

// derive returns HMAC-SHA256(secret, label): independent keys per purpose.
func derive(secret []byte, label string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// hashWith returns HMAC-SHA256(key, id || 0 || code) appended to dst.
func (k *derivedKey) hashWith(dst []byte, id, code string) []byte {
	st := k.pool.Get().(*macState)
	st.buf = append(append(append(st.buf[:0], id...), 0), code...)
	st.h.Reset()
	st.h.Write(st.buf)
	dst = st.h.Sum(dst)
	k.pool.Put(st)
	return dst
}

// protect returns the HMAC of (id, code) under the current key, and the
// code sealed under it: nonce || AES-GCM(code) bound to id. Both share one
// allocation, which also holds the sealing's input: the code is sealed in
// place, and id, the additional data, is copied after the sealed code.
func (kr *keyring) protect(id, code string) (hash, sealed []byte, err error) {
	k := &kr.keys[0]
	ns, over := k.aead.NonceSize(), k.aead.Overhead()
	sealedEnd := sha256.Size + ns + len(code) + over
	buf := make([]byte, sealedEnd+len(id))
	hash = k.hashWith(buf[:0:sha256.Size], id, code)
	nonce := buf[sha256.Size : sha256.Size+ns : sealedEnd]
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, internalErr("reading crypto/rand", err)
	}
	plain := buf[sha256.Size+ns : sha256.Size+ns+len(code)]
	copy(plain, code)
	ad := buf[sealedEnd:]
	copy(ad, id)
	sealed = k.aead.Seal(nonce, nonce, plain, ad)
	return hash, sealed[:len(sealed):len(sealed)], nil
}

// hashes returns the HMAC of (id, code) under every configured key, the
// current key's first, for Store.Attempt to compare with the stored one.
// With one key (the usual case) the result and its hash share one
// allocation.
func (kr *keyring) hashes(id, code string) [][]byte {
	if len(kr.keys) == 1 {
		one := new(struct {
			out [1][]byte
			buf [sha256.Size]byte
		})
		one.out[0] = kr.keys[0].hashWith(one.buf[:0], id, code)
		return one.out[:]
	}
	buf := make([]byte, 0, len(kr.keys)*sha256.Size)
	out := make([][]byte, len(kr.keys))
	for i := range kr.keys {
		buf = kr.keys[i].hashWith(buf, id, code)
		out[i] = buf[i*sha256.Size : (i+1)*sha256.Size : (i+1)*sha256.Size]
	}
	return out
}

// MatchHash reports whether stored equals one of hashes, comparing each in
// constant time. Store implementations use it in Attempt.
func MatchHash(stored []byte, hashes [][]byte) bool {
	match := 0
	for _, h := range hashes {
		match |= subtle.ConstantTimeCompare(stored, h)
	}
	return match == 1
}

var errUnseal = errors.New("verify: sealed code does not open with any configured secret (was the secret changed without keeping the old one in WithSecret?)")

// unseal opens a sealed code with any configured key.
func (kr *keyring) unseal(id string, sealed []byte) (string, error) {
	for i := range kr.keys {
		aead := kr.keys[i].aead
		if len(sealed) < aead.NonceSize() {
			break
		}
		code, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(id))
		if err == nil {
			return string(code), nil
		}
	}
	return "", internalErr("open the sealed code", errUnseal)
}

// newID returns a version 7 UUID string for a verification created at
// now: 48 bits of Unix milliseconds, then 74 random bits (RFC 9562).
// Time-ordered IDs keep a database's inserts at the right-hand edge of
// the indexes that hold them (the verifications' primary key, the
// deliveries' and the pending steps' by verification), where random ones
// touch a different page of each index for every verification, as the
// tables grow past their cache.
func newID(now time.Time) (string, error) {
	var u uuid.UUID
	if _, err := rand.Read(u[6:]); err != nil {
		return "", internalErr("reading crypto/rand", err)
	}
	ms := uint64(max(now.UnixMilli(), 0))
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = (u[6] & 0x0f) | 0x70 // version 7
	u[8] = (u[8] & 0x3f) | 0x80 // RFC 9562 variant
	return u.String(), nil
}

// requestHash identifies a Send request's payload for idempotency: an HMAC
// (so a custom code in it cannot be recovered from the store) over the
// fields that define the request, under the current key.
func (kr *keyring) requestHash(flowID string, to Recipient, code string, req SendRequest) []byte {
	return kr.keys[0].hashWith(nil, req.IdempotencyKey, requestFields(flowID, to, code, req))
}

// sameRequest reports whether stored is the request hash of this request
// under any configured key, so a retry after a secret rotation still
// matches the original request.
func (kr *keyring) sameRequest(stored []byte, flowID string, to Recipient, code string, req SendRequest) bool {
	fields := requestFields(flowID, to, code, req)
	var buf [sha256.Size]byte
	for i := range kr.keys {
		if subtle.ConstantTimeCompare(stored, kr.keys[i].hashWith(buf[:0], req.IdempotencyKey, fields)) == 1 {
			return true
		}
	}
	return false
}

func requestFields(flowID string, to Recipient, code string, req SendRequest) string {
	return strings.Join([]string{"send v1", flowID, to.Phone, to.Email, code, req.ForeignID, req.Language}, "\x00")
}
