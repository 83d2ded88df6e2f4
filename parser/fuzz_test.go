package parser

import (
	"strings"
	"testing"
)

// The fuzz targets check that no input panics and that every error is a *Error; the parsers also must
// not hand out a group that Validate rejects on its own.

func FuzzParseInterfaces(f *testing.F) {
	f.Add([]byte(seed))
	f.Add([]byte(base + tun1))
	f.Add([]byte("iface tun0 inet6 static\n address fd99::10/128\n fakenet fd99::/64\n table 2 3\n rspec [fd99::10]:[fd00::1] \\\n [fd99::2]:[fd00::2]:[fd00::3]\n"))
	for _, c := range badCases() {
		if s, ok := c.files["interfaces"]; ok && len(s) < 4096 {
			f.Add([]byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l := &loader{noIncludes: true} // fuzzed source lines must not read the fuzzing machine's files
		gs, err := l.interfaces("fuzz", data)
		checkResult(t, gs, err)
	})
}

func FuzzParseTOML(f *testing.F) {
	f.Add([]byte(seedTOML))
	f.Add([]byte(baseTOML))
	for _, c := range badCases() {
		for name, s := range c.files {
			if strings.HasSuffix(name, ".toml") && len(s) < 4096 {
				f.Add([]byte(s))
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		gs, err := ParseTOML("fuzz.toml", data)
		checkResult(t, gs, err)
	})
}

func FuzzParseRspecEntry(f *testing.F) {
	for _, s := range []string{"10.99.255.1:10.3.23.1:10.3.23.1", "[fd99::10]:[fd00:1::10]", "[", "]:[", "::", "[]", "a:b", "[1.2.3.4]:5.6.7.8"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, v6 bool) {
		fam := Inet
		if v6 {
			fam = Inet6
		}
		vip, gws, err := ParseRspecEntry(s, fam)
		if err != nil {
			return
		}
		if !vip.IsValid() || len(gws) == 0 || vip.Is4() != (fam == Inet) {
			t.Fatalf("%q: vip %v gws %v", s, vip, gws)
		}
		for _, a := range gws {
			if a.Is4() != (fam == Inet) {
				t.Fatalf("%q: gateway %v of the wrong family", s, a)
			}
		}
	})
}

func checkResult(t *testing.T, gs []Group, err error) {
	t.Helper()
	if err != nil {
		if _, ok := err.(*Error); !ok {
			t.Fatalf("error %T is not *Error: %v", err, err)
		}
		return
	}
	for i := range gs {
		if err := validateGroup(&gs[i]); err != nil {
			t.Fatalf("parser accepted a group validateGroup rejects: %v", err)
		}
	}
}
