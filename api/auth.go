package api

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// userIDPattern is the shape of every user id the API accepts (DESIGN.md).
var userIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidUserID reports whether id is an acceptable user (or account) id.
func ValidUserID(id string) bool { return userIDPattern.MatchString(id) }

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

// Auth mints and verifies HS256 tokens with one shared secret.
type Auth struct {
	Secret []byte
}

// ErrUnauthorized is returned by Verify for a missing, forged, malformed or expired token.
var ErrUnauthorized = errors.New("unauthorized")

// Mint returns a signed token for user that expires after ttl.
func (a Auth) Mint(user string, admin bool, ttl time.Duration) (string, error) {
	if !ValidUserID(user) {
		return "", fmt.Errorf("mint token: user id %q does not match [A-Za-z0-9_-]{1,64}", user)
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
func (a Auth) Verify(token string) (Principal, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return a.Secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	if err != nil || !ValidUserID(c.Subject) {
		return Principal{}, ErrUnauthorized
	}
	return Principal{UserID: c.Subject, Admin: c.Role == "admin"}, nil
}
