package alipay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// maxResponseBytes bounds what is read from the gateway; real answers are a few KiB.
const maxResponseBytes = 1 << 20

// signedParams builds the common parameters of method around biz, signs them
// and returns the set ready to send.
func (c *Client) signedParams(method string, biz any, notify, ret bool) (url.Values, error) {
	bizJSON, err := json.Marshal(biz)
	if err != nil {
		return nil, fmt.Errorf("%s: encode biz_content: %w", method, err)
	}
	p := url.Values{}
	p.Set("app_id", c.cfg.AppID)
	p.Set("method", method)
	p.Set("format", "JSON")
	p.Set("charset", "utf-8")
	p.Set("sign_type", "RSA2")
	p.Set("version", "1.0")
	p.Set("timestamp", FormatTime(c.cfg.Now()))
	p.Set("biz_content", string(bizJSON))
	if notify && c.cfg.NotifyURL != "" {
		p.Set("notify_url", c.cfg.NotifyURL)
	}
	if ret && c.cfg.ReturnURL != "" {
		p.Set("return_url", c.cfg.ReturnURL)
	}
	sig, err := Sign(p, c.cfg.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	p.Set("sign", sig)
	return p, nil
}

// signedURL is the gateway URL a browser is sent to for page and wap pays.
func (c *Client) signedURL(method string, biz any) (string, error) {
	p, err := c.signedParams(method, biz, true, true)
	if err != nil {
		return "", err
	}
	u := *c.gateway
	u.RawQuery = p.Encode()
	return u.String(), nil
}

// call POSTs a signed request and decodes the verified xxx_response into out.
func (c *Client) call(ctx context.Context, method string, biz any, notify bool, out any) error {
	p, err := c.signedParams(method, biz, notify, false)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.gateway.String(), strings.NewReader(p.Encode()))
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded;charset=utf-8")
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("%s: read response: %w", method, err)
	}
	if len(body) > maxResponseBytes {
		return fmt.Errorf("%s: response exceeds %d bytes", method, maxResponseBytes)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: gateway answered HTTP %d", method, resp.StatusCode)
	}
	if err := c.decodeResponse(method, body, out); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	return nil
}

// decodeResponse verifies and decodes a gateway answer
// {"<method>_response":{...},"sign":"..."}. The signature covers the exact
// bytes of the response value as sent, so that value is cut out of the body
// untouched; parsing it into a struct and serialising again would change key
// order and whitespace and break verification.
//
// An answer without sign is accepted only as a business error: Alipay leaves
// some errors unsigned (an unknown app, say), and an unsigned error can only
// make a call fail, never make a trade look paid.
func (c *Client) decodeResponse(method string, body []byte, out any) error {
	fields, err := topLevelFields(body)
	if err != nil {
		return err
	}
	key := strings.ReplaceAll(method, ".", "_") + "_response"
	raw, ok := fields[key]
	if !ok {
		if raw, ok = fields["error_response"]; !ok {
			return fmt.Errorf("%w: response has neither %s nor error_response", ErrMalformed, key)
		}
	}
	var sign string
	if s, ok := fields["sign"]; ok {
		if err := json.Unmarshal(s, &sign); err != nil {
			return fmt.Errorf("%w: sign is not a JSON string", ErrMalformed)
		}
	}
	var head Error
	if err := json.Unmarshal(raw, &head); err != nil {
		return fmt.Errorf("%w: response value: %v", ErrMalformed, err)
	}
	switch {
	case sign != "":
		if err := VerifyBytes(raw, sign, c.cfg.AlipayPublicKey); err != nil {
			return fmt.Errorf("response: %w", err)
		}
	case head.Code == CodeSuccess:
		return fmt.Errorf("%w: successful response carries no sign", ErrBadSignature)
	}
	if head.Code != CodeSuccess {
		return &head
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%w: response value: %v", ErrMalformed, err)
	}
	return nil
}

// topLevelFields splits a JSON object into its members' raw values, byte for
// byte as they appear in body. Repeated keys are refused: verifying one copy
// and reading another would defeat the signature.
func topLevelFields(body []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("%w: response is not a JSON object", ErrMalformed)
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: response: %v", ErrMalformed, err)
		}
		k, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("%w: response: object key expected", ErrMalformed)
		}
		// RawMessage receives the value's bytes exactly as they are in body.
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%w: response member %q: %v", ErrMalformed, k, err)
		}
		if _, dup := fields[k]; dup {
			return nil, fmt.Errorf("%w: response repeats member %q", ErrMalformed, k)
		}
		fields[k] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%w: response: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after response object", ErrMalformed)
	}
	return fields, nil
}
