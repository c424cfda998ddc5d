package settle

import "testing"

// TestPaymentsCloseTwice: Close of a Payments that never applied a notify
// starts no committer, and a second Close does nothing (it used to start the
// committer only to stop it, and to panic on the second call).
func TestPaymentsCloseTwice(t *testing.T) {
	p := NewPayments(nil, nil)
	p.Close()
	p.Close()
	if p.running {
		t.Fatal("Close started the group committer")
	}
}
