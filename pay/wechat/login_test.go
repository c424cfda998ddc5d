package wechat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const testAppSecret = "s3cr3t-app-secret-0123456789abcd"

func TestCode2Session(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.URL.Path != "/prefix/sns/jscode2session" || q.Get("appid") != "wxapp" || q.Get("secret") != testAppSecret ||
			q.Get("grant_type") != "authorization_code" {
			http.Error(w, "bad request "+r.URL.String(), http.StatusBadRequest)
			return
		}
		switch q.Get("js_code") {
		case "good":
			fmt.Fprint(w, `{"openid":"oUser1","session_key":"SECRETSESSIONKEY","unionid":"uUser1"}`)
		case "used":
			fmt.Fprint(w, `{"errcode":40163,"errmsg":"code been used"}`)
		default:
			fmt.Fprint(w, `{"errcode":-1,"errmsg":"system error"}`)
		}
	}))
	defer srv.Close()
	l, err := NewLogin(MiniProgramConfig{AppID: "wxapp", AppSecret: testAppSecret, Host: srv.URL + "/prefix/"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := l.Code2Session(ctx, "good")
	if err != nil {
		t.Fatal(err)
	}
	if s != (Session{OpenID: "oUser1", UnionID: "uUser1"}) {
		t.Fatalf("session %+v", s)
	}
	if _, err := l.Code2Session(ctx, "used"); !errors.Is(err, ErrLoginCode) {
		t.Fatalf("used code: %v, want ErrLoginCode", err)
	}
	if _, err := l.Code2Session(ctx, ""); !errors.Is(err, ErrLoginCode) {
		t.Fatalf("empty code: %v, want ErrLoginCode", err)
	}
	if _, err := l.Code2Session(ctx, "busy"); err == nil || errors.Is(err, ErrLoginCode) {
		t.Fatalf("system error: %v, want an error that is not the code's", err)
	}
}

// TestCode2SessionErrorsHideSecret: a transport failure names its cause but
// never the URL, whose query holds the app secret.
func TestCode2SessionErrorsHideSecret(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: the dial is refused
	l, err := NewLogin(MiniProgramConfig{AppID: "wxapp", AppSecret: testAppSecret, Host: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Code2Session(context.Background(), "good")
	if err == nil {
		t.Fatal("code2Session against a closed port succeeded")
	}
	if strings.Contains(err.Error(), testAppSecret) || strings.Contains(err.Error(), "secret=") {
		t.Fatalf("error leaks the app secret: %v", err)
	}
}
