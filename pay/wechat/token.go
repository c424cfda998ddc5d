package wechat

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultTokenBaseURL is the Official Account / Mini Program API host.
const DefaultTokenBaseURL = "https://api.weixin.qq.com"

// TokenConfig configures a TokenSource. Every instance of the service uses
// the same Key, so that they share one token and one refresher: fetching a
// token invalidates the previous one (after a ~5 minute overlap), so
// instances fetching on their own would knock each other's tokens out.
type TokenConfig struct {
	AppID, Secret string
	BaseURL       string // default DefaultTokenBaseURL; tests and the sandbox point it elsewhere
	Redis         redis.UniversalClient
	// Key is the Redis hash holding the token, e.g. "fg:wechat:token:<appid>".
	// The refresh lock lives at Key+":lock".
	Key string
	// RefreshBefore: a token with less than this left is refreshed (default
	// 5 min; capped at half the token's lifetime so a short-lived token
	// cannot make every call refresh).
	RefreshBefore time.Duration
	// LockTTL bounds one fetch: a refresher that dies frees the lock after it
	// (default 10 s). FailBackoff is how long the lock is kept after a failed
	// fetch so that other instances do not hammer the endpoint (default 1 s).
	LockTTL, FailBackoff time.Duration
	// PollInterval is how often an instance waiting for another's fetch
	// looks again (default 50 ms); the wait is bounded by the caller's ctx.
	PollInterval time.Duration
	HTTPClient   *http.Client
	Now          func() time.Time
}

// TokenSource hands out the shared access_token. Safe for concurrent use.
type TokenSource struct {
	cfg     TokenConfig
	lockKey string

	mu    sync.Mutex
	local cachedToken // avoids a Redis round trip while the token is fresh
}

type cachedToken struct {
	token                           string
	fetchedAt, refreshAt, expiresAt time.Time
}

// APIError is an {errcode, errmsg} answer from the Official Account APIs.
type APIError struct {
	Code    int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("wechat api: errcode %d: %s", e.Code, e.Message)
}

// Error codes meaning the access_token is stale or was replaced.
const (
	ErrCodeInvalidCredential = 40001 // invalid credential / access_token; at /cgi-bin/token: wrong secret
	ErrCodeInvalidToken      = 40014 // invalid access_token
	ErrCodeTokenExpired      = 42001 // access_token expired
)

// IsStaleToken reports whether err is an *APIError saying the token used is
// no longer valid (40001, 40014, 42001).
func IsStaleToken(err error) bool {
	var e *APIError
	if !errors.As(err, &e) {
		return false
	}
	return e.Code == ErrCodeInvalidCredential || e.Code == ErrCodeInvalidToken || e.Code == ErrCodeTokenExpired
}

// ParseAPIError returns an *APIError when body carries a non-zero errcode,
// and nil otherwise (a success body, or one that is not JSON). Use it on the
// answers of calls made inside Do, so stale tokens are recognised.
func ParseAPIError(body []byte) error {
	var w struct {
		ErrCode *int   `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}
	if json.Unmarshal(body, &w) != nil || w.ErrCode == nil || *w.ErrCode == 0 {
		return nil
	}
	return &APIError{Code: *w.ErrCode, Message: w.ErrMsg}
}

// NewTokenSource validates cfg and fills in defaults.
func NewTokenSource(cfg TokenConfig) (*TokenSource, error) {
	var problems []string
	if cfg.AppID == "" {
		problems = append(problems, "AppID is empty")
	}
	if cfg.Secret == "" {
		problems = append(problems, "Secret is empty")
	}
	if cfg.Redis == nil {
		problems = append(problems, "Redis is nil")
	}
	if cfg.Key == "" {
		problems = append(problems, "Key is empty")
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultTokenBaseURL
	}
	if u, err := url.Parse(cfg.BaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		problems = append(problems, fmt.Sprintf("BaseURL %q is not an http(s) URL", cfg.BaseURL))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("wechat token: invalid config: %s", strings.Join(problems, "; "))
	}
	if cfg.RefreshBefore <= 0 {
		cfg.RefreshBefore = 5 * time.Minute
	}
	if cfg.LockTTL <= 0 {
		cfg.LockTTL = 10 * time.Second
	}
	if cfg.FailBackoff <= 0 {
		cfg.FailBackoff = time.Second
	}
	cfg.FailBackoff = min(cfg.FailBackoff, cfg.LockTTL)
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 50 * time.Millisecond
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: cfg.LockTTL}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &TokenSource{cfg: cfg, lockKey: cfg.Key + ":lock"}, nil
}

var (
	// Release the lock only if we still own it: after LockTTL another
	// instance may hold it, and deleting that would let a third one in.
	releaseLock = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
	// After a failed fetch, keep (our) lock a little longer as a backoff.
	holdLock = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`)
	// Drop the cached token only if it is still the stale one: when many
	// callers report the same stale token, only the first forces a refresh.
	invalidateToken = redis.NewScript(`if redis.call("HGET", KEYS[1], "token") == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
)

// Token returns a valid access_token, fetching one only when the shared
// cache has none or it is about to expire, and then from one instance at a
// time. Others keep using a still-valid token meanwhile, or wait (bounded
// by ctx) for the new one when there is none.
func (s *TokenSource) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	l := s.local
	s.mu.Unlock()
	if l.token != "" && s.cfg.Now().Before(l.refreshAt) {
		return l.token, nil
	}
	for {
		now := s.cfg.Now()
		ct, found, err := s.load(ctx)
		if err != nil {
			// Redis is down: a token we still hold stays usable until it expires.
			if l.token != "" && now.Before(l.expiresAt) {
				return l.token, nil
			}
			return "", err
		}
		if found && now.Before(ct.refreshAt) {
			s.remember(ct)
			return ct.token, nil
		}
		lockVal, locked, err := s.lock(ctx)
		if err != nil {
			return "", err
		}
		if locked {
			return s.refreshLocked(ctx, lockVal)
		}
		if found && now.Before(ct.expiresAt) {
			s.remember(ct)
			return ct.token, nil
		}
		t := time.NewTimer(s.cfg.PollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("wechat token: waiting for another instance's refresh: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Invalidate reports that stale was refused (40001/42001/40014). The shared
// token is dropped only if it is still stale, so the next Token fetches once
// however many callers report the same token.
func (s *TokenSource) Invalidate(ctx context.Context, stale string) error {
	s.mu.Lock()
	if s.local.token == stale {
		s.local = cachedToken{}
	}
	s.mu.Unlock()
	if err := invalidateToken.Run(ctx, s.cfg.Redis, []string{s.cfg.Key}, stale).Err(); err != nil {
		return fmt.Errorf("wechat token: invalidate %s: %w", s.cfg.Key, err)
	}
	return nil
}

// Do calls fn with a token; when fn fails with a stale-token error (see
// IsStaleToken) it invalidates that token, gets a fresh one and calls fn
// exactly once more, whatever that second call returns.
func (s *TokenSource) Do(ctx context.Context, fn func(token string) error) error {
	tok, err := s.Token(ctx)
	if err != nil {
		return err
	}
	err = fn(tok)
	if !IsStaleToken(err) {
		return err
	}
	if ierr := s.Invalidate(ctx, tok); ierr != nil {
		return errors.Join(err, ierr)
	}
	tok, terr := s.Token(ctx)
	if terr != nil {
		return errors.Join(err, terr)
	}
	return fn(tok)
}

func (s *TokenSource) remember(ct cachedToken) {
	s.mu.Lock()
	s.local = ct
	s.mu.Unlock()
}

func (s *TokenSource) load(ctx context.Context) (cachedToken, bool, error) {
	vals, err := s.cfg.Redis.HMGet(ctx, s.cfg.Key, "token", "refresh_at", "expires_at").Result()
	if err != nil {
		return cachedToken{}, false, fmt.Errorf("wechat token: read %s: %w", s.cfg.Key, err)
	}
	tok, _ := vals[0].(string)
	ra, _ := vals[1].(string)
	ea, _ := vals[2].(string)
	raMS, err1 := strconv.ParseInt(ra, 10, 64)
	eaMS, err2 := strconv.ParseInt(ea, 10, 64)
	if tok == "" || err1 != nil || err2 != nil {
		return cachedToken{}, false, nil
	}
	return cachedToken{token: tok, refreshAt: time.UnixMilli(raMS), expiresAt: time.UnixMilli(eaMS)}, true, nil
}

func (s *TokenSource) lock(ctx context.Context) (string, bool, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, fmt.Errorf("wechat token: lock value: %w", err)
	}
	val := hex.EncodeToString(b[:])
	ok, err := s.cfg.Redis.SetNX(ctx, s.lockKey, val, s.cfg.LockTTL).Result()
	if err != nil {
		return "", false, fmt.Errorf("wechat token: lock %s: %w", s.lockKey, err)
	}
	return val, ok, nil
}

// refreshLocked runs while holding the lock.
func (s *TokenSource) refreshLocked(ctx context.Context, lockVal string) (string, error) {
	// Another instance may have stored a fresh token between our read and
	// our lock; fetching again would invalidate the one it just handed out.
	if ct, found, err := s.load(ctx); err == nil && found && s.cfg.Now().Before(ct.refreshAt) {
		s.unlock(lockVal)
		s.remember(ct)
		return ct.token, nil
	}
	// Leave a margin so the token is stored before the lock can expire.
	fctx, cancel := context.WithTimeout(ctx, s.cfg.LockTTL*8/10)
	defer cancel()
	ct, err := s.fetch(fctx)
	if err != nil {
		s.backoff(lockVal)
		return "", err
	}
	// A failed store is not reported: the token is valid and ours to use,
	// and the next caller that finds none in Redis fetches again.
	_, _ = s.cfg.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.cfg.Key, "token", ct.token,
			"refresh_at", strconv.FormatInt(ct.refreshAt.UnixMilli(), 10),
			"expires_at", strconv.FormatInt(ct.expiresAt.UnixMilli(), 10))
		// Redis drops the entry once the token is useless.
		p.PExpire(ctx, s.cfg.Key, ct.expiresAt.Sub(ct.fetchedAt))
		return nil
	})
	s.unlock(lockVal)
	s.remember(ct)
	return ct.token, nil
}

// unlock and backoff use their own short context: they must run even when
// the caller's ctx is already done, or the lock would linger for LockTTL.
func (s *TokenSource) unlock(val string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = releaseLock.Run(ctx, s.cfg.Redis, []string{s.lockKey}, val).Err()
}

func (s *TokenSource) backoff(val string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = holdLock.Run(ctx, s.cfg.Redis, []string{s.lockKey}, val, s.cfg.FailBackoff.Milliseconds()).Err()
}

// fetch calls GET /cgi-bin/token. Errors never include the URL: it carries the secret.
func (s *TokenSource) fetch(ctx context.Context) (cachedToken, error) {
	q := url.Values{"grant_type": {"client_credential"}, "appid": {s.cfg.AppID}, "secret": {s.cfg.Secret}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.BaseURL+"/cgi-bin/token?"+q.Encode(), nil)
	if err != nil {
		return cachedToken{}, fmt.Errorf("wechat token: build request for appid %s: %v", s.cfg.AppID, scrub(err))
	}
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return cachedToken{}, fmt.Errorf("wechat token: fetch for appid %s: %w", s.cfg.AppID, scrub(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return cachedToken{}, fmt.Errorf("wechat token: read answer for appid %s: %w", s.cfg.AppID, scrub(err))
	}
	if apiErr := ParseAPIError(body); apiErr != nil {
		return cachedToken{}, fmt.Errorf("wechat token: fetch for appid %s: %w", s.cfg.AppID, apiErr)
	}
	if resp.StatusCode != http.StatusOK {
		return cachedToken{}, fmt.Errorf("wechat token: fetch for appid %s: HTTP %d", s.cfg.AppID, resp.StatusCode)
	}
	var w struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &w); err != nil || w.AccessToken == "" || w.ExpiresIn <= 0 {
		return cachedToken{}, fmt.Errorf("wechat token: fetch for appid %s: answer lacks access_token or expires_in", s.cfg.AppID)
	}
	now := s.cfg.Now()
	life := time.Duration(w.ExpiresIn) * time.Second
	lead := min(s.cfg.RefreshBefore, life/2)
	return cachedToken{token: w.AccessToken, fetchedAt: now, refreshAt: now.Add(life - lead), expiresAt: now.Add(life)}, nil
}

// scrub drops the URL (which holds the appsecret) from a transport error.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}
