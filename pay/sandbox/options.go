package sandbox

// PayOptions are the test knobs of a simulated payment; providers ignore the
// ones that make no sense for them.
type PayOptions struct {
	// Duplicates is how many copies of the notify are delivered concurrently,
	// each with its own retry chain (values below 1 mean 1).
	Duplicates int
	// ForgeSignature alters the notify after signing, so its signature is wrong.
	ForgeSignature bool
	// AmountCents, when positive, is the amount the notify claims, correctly
	// signed, instead of the trade's: it exercises the merchant's amount check.
	AmountCents int64
	// SignTestProbe (WeChat) sends a WECHATPAY/SIGNTEST/ probe in place of
	// the notify's signature: the merchant must refuse it as a payment.
	SignTestProbe bool
	// NoNotify (Alipay) pays without ever sending the notify, as when every
	// delivery is lost: the merchant learns of the payment only by asking.
	NoNotify bool
	// StaleTimestamp (WeChat) signs the notify with a timestamp 10 minutes
	// old, beyond the 5-minute window a merchant accepts.
	StaleTimestamp bool
}

// PayOption sets one of the PayOptions.
type PayOption func(*PayOptions)

// WithDuplicates delivers n copies of the notify concurrently.
func WithDuplicates(n int) PayOption { return func(o *PayOptions) { o.Duplicates = n } }

// WithoutNotify pays without sending the notify (Alipay).
func WithoutNotify() PayOption { return func(o *PayOptions) { o.NoNotify = true } }

// WithForgedSignature tampers with the notify after signing it.
func WithForgedSignature() PayOption { return func(o *PayOptions) { o.ForgeSignature = true } }

// WithAmountCents makes the notify claim cents, signed correctly.
func WithAmountCents(cents int64) PayOption { return func(o *PayOptions) { o.AmountCents = cents } }

// WithSignTestProbe sends a SIGNTEST probe instead of a validly signed notify (WeChat).
func WithSignTestProbe() PayOption { return func(o *PayOptions) { o.SignTestProbe = true } }

// WithStaleTimestamp signs the notify 10 minutes in the past (WeChat).
func WithStaleTimestamp() PayOption { return func(o *PayOptions) { o.StaleTimestamp = true } }

// applyPayOptions folds opts into PayOptions with defaults filled in.
func applyPayOptions(opts []PayOption) PayOptions {
	var o PayOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.Duplicates < 1 {
		o.Duplicates = 1
	}
	return o
}
