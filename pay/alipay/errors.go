package alipay

import (
	"errors"
	"fmt"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrBadSignature: a notify or response whose signature is missing or
	// does not verify with the Alipay public key.
	ErrBadSignature = errors.New("alipay: bad signature")
	// ErrWrongApp: a correctly signed notify addressed to another app_id or seller_id.
	ErrWrongApp = errors.New("alipay: notify is for another app or seller")
	// ErrMalformed: input that cannot be parsed, or lacks a required field.
	ErrMalformed = errors.New("alipay: malformed message")
)

// Codes Alipay puts in code and sub_code.
const (
	CodeSuccess       = "10000"
	CodeBusinessError = "40004"

	SubCodeTradeNotExist  = "ACQ.TRADE_NOT_EXIST"
	SubCodeTradeHasClose  = "ACQ.TRADE_HAS_CLOSE"
	SubCodeTradeHasPaid   = "ACQ.TRADE_HAS_SUCCESS"
	SubCodeTradeStatus    = "ACQ.TRADE_STATUS_ERROR"
	SubCodeInvalidSign    = "isv.invalid-signature"
	SubCodeContextChanged = "ACQ.CONTEXT_INCONSISTENT"
)

// Targets for errors.Is on business errors, compared by sub_code.
var (
	// ErrTradeNotExist: Alipay does not know the trade. Note that a precreate
	// trade nobody has scanned yet also answers this to query and close.
	ErrTradeNotExist = &Error{Code: CodeBusinessError, SubCode: SubCodeTradeNotExist}
	// ErrTradeHasClose: the trade is closed.
	ErrTradeHasClose = &Error{Code: CodeBusinessError, SubCode: SubCodeTradeHasClose}
	// ErrTradeHasPaid: the trade is already paid (e.g. precreate again).
	ErrTradeHasPaid = &Error{Code: CodeBusinessError, SubCode: SubCodeTradeHasPaid}
	// ErrTradeStatus: the trade is in a state that does not allow the call
	// (closing a paid or closed trade, refunding an unpaid one).
	ErrTradeStatus = &Error{Code: CodeBusinessError, SubCode: SubCodeTradeStatus}
)

// Error is a gateway answer whose code is not 10000.
type Error struct {
	Code    string `json:"code"`
	Msg     string `json:"msg"`
	SubCode string `json:"sub_code"`
	SubMsg  string `json:"sub_msg"`
}

// Error renders code, msg and, when present, sub_code and sub_msg.
func (e *Error) Error() string {
	s := fmt.Sprintf("alipay: %s %s", e.Code, e.Msg)
	if e.SubCode != "" {
		s += fmt.Sprintf(": %s %s", e.SubCode, e.SubMsg)
	}
	return s
}

// Is matches another *Error by sub_code when the target has one, else by
// code, so errors.Is(err, ErrTradeNotExist) works on any wrapped answer.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	if t.SubCode != "" {
		return t.SubCode == e.SubCode
	}
	return t.Code != "" && t.Code == e.Code
}
