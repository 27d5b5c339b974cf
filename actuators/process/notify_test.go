package process

import (
	"testing"
)

func TestParseNotify(t *testing.T) {
	str := func(s string) *string { return &s }
	tests := []struct {
		in      string
		want    notifyMsg
		wantErr bool
	}{
		{in: "READY=1", want: notifyMsg{Ready: true}},
		{in: "READY=1\nSTATUS=warming up\n", want: notifyMsg{Ready: true, Status: str("warming up")}},
		{in: "WATCHDOG=1", want: notifyMsg{Watchdog: true}},
		{in: "WATCHDOG=trigger", want: notifyMsg{WatchdogTrigger: true}},
		{in: "WATCHDOG_USEC=2000000", want: notifyMsg{WatchdogUSec: 2000000}},
		{in: "MAINPID=42\nSTOPPING=1", want: notifyMsg{MainPID: 42, Stopping: true}},
		{in: "STATUS=a=b", want: notifyMsg{Status: str("a=b")}},
		{in: "X_UNKNOWN=1\nREADY=0", want: notifyMsg{}},
		{in: "", want: notifyMsg{}},
		{in: "garbage", wantErr: true},
		{in: "=1", wantErr: true},
		{in: "WATCHDOG_USEC=soon", wantErr: true},
		{in: "MAINPID=-1", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseNotify([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if got.Ready != tc.want.Ready || got.Watchdog != tc.want.Watchdog || got.WatchdogTrigger != tc.want.WatchdogTrigger ||
				got.Stopping != tc.want.Stopping || got.WatchdogUSec != tc.want.WatchdogUSec || got.MainPID != tc.want.MainPID ||
				(got.Status == nil) != (tc.want.Status == nil) || (got.Status != nil && *got.Status != *tc.want.Status) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
