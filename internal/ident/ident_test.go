package ident

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	tests := []struct {
		name, user, group string
		uid, gid          uint32
		wantErr, none     bool
		errIs             error
		errSays, errNot   string
	}{
		{name: "nothing", none: true},
		{name: "user by name", user: "nobody", uid: 65534, gid: 65534},
		{name: "user by id", user: "65534", uid: 65534, gid: 65534},
		{name: "group overrides the primary group", user: "nobody", group: "root", uid: 65534, gid: 0},
		{name: "group only keeps the caller's uid", group: "nogroup", uid: uint32(os.Getuid()), gid: 65534},
		{name: "unknown user", user: "no-such-user-resil", wantErr: true, errIs: ErrUser, errSays: "unknown user no-such-user-resil", errNot: "strconv"},
		{name: "unknown user id", user: "4000000", wantErr: true, errIs: ErrUser, errSays: "unknown userid 4000000"},
		{name: "unknown group", group: "no-such-group-resil", wantErr: true, errIs: ErrGroup, errSays: "unknown group no-such-group-resil", errNot: "strconv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Resolve(tt.user, tt.group)
			switch {
			case tt.wantErr:
				if err == nil {
					t.Fatalf("want an error, got %+v", r)
				}
				if !errors.Is(err, tt.errIs) || !strings.Contains(err.Error(), tt.errSays) || (tt.errNot != "" && strings.Contains(err.Error(), tt.errNot)) {
					t.Fatalf("error %q: want %v, saying %q, not %q", err, tt.errIs, tt.errSays, tt.errNot)
				}
				return
			case err != nil:
				t.Fatal(err)
			case tt.none:
				if r.Cred != nil || r.User != nil {
					t.Fatalf("want nothing, got %+v", r)
				}
				return
			}
			if r.Cred.Uid != tt.uid || r.Cred.Gid != tt.gid {
				t.Fatalf("uid %d gid %d, want %d %d", r.Cred.Uid, r.Cred.Gid, tt.uid, tt.gid)
			}
			if (tt.user != "") != (r.User != nil) {
				t.Fatalf("user entry %+v", r.User)
			}
		})
	}
}
