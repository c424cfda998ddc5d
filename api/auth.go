package api

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"

	"github.com/flashgrab/flashgrab"
)

// Claims are the JWT claims flashgrab issues and accepts: the user id in
// "sub", a mandatory "exp", and "role":"admin" for administrators.
type Claims struct {
	Role string `json:"role,omitempty"`
	jwt.RegisteredClaims
}

// Principal is the authenticated caller of a request.
type Principal struct {
	UserID string
	Admin  bool
}

// Auth mints and verifies HS256 tokens with one shared secret. An Auth made
// by NewAuth remembers the tokens it verified (copies share what it
// remembers); a bare Auth{Secret: s} mints and verifies alike, checking every
// token afresh, which is all a command that only mints needs.
type Auth struct {
	Secret []byte
	tokens *tokenCache // nil: nothing remembered
}

// NewAuth returns an Auth for secret that remembers verified tokens, as a
// server's should: see Verify.
func NewAuth(secret []byte) Auth {
	return Auth{Secret: secret, tokens: newTokenCache(maxCachedTokens)}
}

// ErrUnauthorized is returned by Verify for a missing, forged, malformed or expired token.
var ErrUnauthorized = errors.New("unauthorized")

// Mint returns a signed token for user that expires after ttl.
func (a Auth) Mint(user string, admin bool, ttl time.Duration) (string, error) {
	if !flashgrab.ValidID(user) {
		return "", fmt.Errorf("mint token: user id %q: %w", user, flashgrab.InvalidID("user"))
	}
	if ttl <= 0 {
		return "", fmt.Errorf("mint token: ttl %v must be positive", ttl)
	}
	if len(a.Secret) == 0 {
		return "", errors.New("mint token: empty secret")
	}
	now := time.Now()
	c := Claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	if admin {
		c.Role = "admin"
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(a.Secret)
}

// Verify parses token, checks its HS256 signature and expiry, and returns the caller.
//
// A client sends the same token with every request, and checking it (JSON
// decoding, HMAC) costs more than the rest of a grab's CPU in this process,
// so an Auth from NewAuth remembers successful verifications (see tokenCache)
// until the token expires. Failures are never remembered.
func (a Auth) Verify(token string) (Principal, error) {
	now := time.Now()
	if p, ok := a.tokens.get(a.Secret, token, now); ok {
		return p, nil
	}
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return a.Secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil || !flashgrab.ValidID(c.Subject) || c.ExpiresAt == nil {
		return Principal{}, ErrUnauthorized
	}
	p := Principal{UserID: c.Subject, Admin: c.Role == "admin"}
	a.tokens.put(a.Secret, token, p, c.ExpiresAt.Time)
	return p, nil
}

// maxCachedTokens bounds the cache (about 300 bytes an entry); past it each
// insertion evicts an arbitrary entry.
const maxCachedTokens = 1 << 16

const tokenShards = 16

// tokenCache remembers tokens that verified, in a bounded map from token to
// principal, sharded so that concurrent requests rarely meet on a lock. The
// answer depends only on the secret (kept with each entry and compared on
// every hit: copies of an Auth share the cache and Secret is a field anyone
// can set) and the token, whose expiry is checked on every hit. A token that
// verified stays valid until it expires: claims are signed, so nothing about
// it can change, and the check for "nbf" passed once for good. A nil
// *tokenCache remembers nothing.
type tokenCache struct {
	seed     maphash.Seed
	perShard int
	shards   [tokenShards]tokenShard
}

type tokenShard struct {
	mu sync.RWMutex
	m  map[string]cachedToken
	_  [40]byte // keep shards on separate cache lines
}

type cachedToken struct {
	secret []byte
	p      Principal
	exp    time.Time
}

func newTokenCache(size int) *tokenCache {
	c := &tokenCache{seed: maphash.MakeSeed(), perShard: max(size/tokenShards, 1)}
	for i := range c.shards {
		c.shards[i].m = map[string]cachedToken{}
	}
	return c
}

func (c *tokenCache) shard(token string) *tokenShard {
	return &c.shards[maphash.String(c.seed, token)%tokenShards]
}

func (c *tokenCache) get(secret []byte, token string, now time.Time) (Principal, bool) {
	if c == nil {
		return Principal{}, false
	}
	sh := c.shard(token)
	sh.mu.RLock()
	e, ok := sh.m[token]
	sh.mu.RUnlock()
	if !ok || !now.Before(e.exp) || !bytes.Equal(e.secret, secret) {
		return Principal{}, false
	}
	return e.p, true
}

// getBytes is get for a token still in the request's bytes: looking it up
// allocates nothing.
func (c *tokenCache) getBytes(secret, token []byte, now time.Time) (Principal, bool) {
	if c == nil {
		return Principal{}, false
	}
	sh := &c.shards[maphash.Bytes(c.seed, token)%tokenShards]
	sh.mu.RLock()
	e, ok := sh.m[string(token)]
	sh.mu.RUnlock()
	if !ok || !now.Before(e.exp) || !bytes.Equal(e.secret, secret) {
		return Principal{}, false
	}
	return e.p, true
}

func (c *tokenCache) put(secret []byte, token string, p Principal, exp time.Time) {
	if c == nil {
		return
	}
	sh := c.shard(token)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.m[token]; !ok && len(sh.m) >= c.perShard {
		for k := range sh.m { // map order is arbitrary: evicts a random entry
			delete(sh.m, k)
			break
		}
	}
	sh.m[token] = cachedToken{secret: bytes.Clone(secret), p: p, exp: exp}
}

// grabPrincipal is principal for the grab path: a remembered token is found
// from the header's bytes without copying them into a string; anything else
// takes the common path.
func (s *Server) grabPrincipal(ctx *fasthttp.RequestCtx) (Principal, error) {
	const prefix = "Bearer "
	h := ctx.Request.Header.Peek("Authorization")
	if len(h) > len(prefix) && strings.EqualFold(string(h[:len(prefix)]), prefix) {
		if p, ok := s.Auth.tokens.getBytes(s.Auth.Secret, h[len(prefix):], time.Now()); ok {
			return p, nil
		}
	}
	return s.principal(ctx)
}
