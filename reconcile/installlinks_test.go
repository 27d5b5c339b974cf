package reconcile

import (
	"slices"
	"testing"
)

func TestInstallLinks(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       []string
		ok         bool
	}{
		{"wanted by one", "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n", []string{"multi-user.target.wants"}, true},
		{"several kinds, sorted, deduplicated", "[Install]\nWantedBy=b.target a.target\nRequiredBy=c.target\nUpheldBy=d.target\nWantedBy=a.target\n",
			[]string{"a.target.wants", "b.target.wants", "c.target.requires", "d.target.upholds"}, true},
		{"no install section", "[Service]\nExecStart=/bin/true\n", nil, true},
		{"settings of other sections named alike", "[Unit]\nWantedBy=x.target\n[Install]\nWantedBy=y.target\n", []string{"y.target.wants"}, true},
		{"an alias is not a link resil checks", "[Install]\nWantedBy=a.target\nAlias=x.service\n", nil, false},
		{"a specifier", "[Install]\nWantedBy=%i.target\n", nil, false},
		{"an empty value resets", "[Install]\nWantedBy=a.target\nWantedBy=\n", nil, false},
		{"a line that is no setting", "[Install]\nWantedBy=a.target\ngarbage\n", nil, false},
		{"comments and blanks", "[Install]\n# WantedBy=x.target\n; Alias=y\n\n  WantedBy = a.target  \n", []string{"a.target.wants"}, true},
		{"a continuation joins the next line", "[Install]\nWantedBy=a.target \\\n b.target\n", []string{"a.target.wants", "b.target.wants"}, true},
		{"a continued line swallows a header", "[Service]\nEnvironment=A=1 \\\n[Install]\nWantedBy=a.target\n", nil, true},
		{"a continuation at the end", "[Install]\nWantedBy=a.target \\", nil, false},
		{"no trailing newline", "[Install]\nWantedBy=a.target", []string{"a.target.wants"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := installLinks([]byte(tc.file))
			if ok != tc.ok || !slices.Equal(got, tc.want) {
				t.Errorf("installLinks = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
			// The one-section scan sees exactly parseUnitSettings' [Install].
			var each []string
			eachUnitSetting([]byte(tc.file), "Install", func(k unitKey, v string) bool {
				each = append(each, k.key+"="+v)
				return true
			})
			var all []string
			eachUnitSetting([]byte(tc.file), "", func(k unitKey, v string) bool {
				if k.section == "Install" {
					all = append(all, k.key+"="+v)
				}
				return true
			})
			if !slices.Equal(each, all) {
				t.Errorf("[Install] alone %q, of all %q", each, all)
			}
		})
	}
}
