package main

import "testing"

func TestCrashAfterStepEnv(t *testing.T) {
	for _, tc := range []struct {
		val     string
		hook    bool
		wantErr bool
	}{
		{val: "", hook: false},
		{val: "3", hook: true},
		{val: "0", wantErr: true},
		{val: "-1", wantErr: true},
		{val: "x", wantErr: true},
	} {
		t.Run(tc.val, func(t *testing.T) {
			t.Setenv(crashAfterStepEnv, tc.val)
			h, err := crashAfterStep()
			if (err != nil) != tc.wantErr || (h != nil) != tc.hook {
				t.Fatalf("%s=%q: hook %v, err %v", crashAfterStepEnv, tc.val, h != nil, err)
			}
		})
	}
}
