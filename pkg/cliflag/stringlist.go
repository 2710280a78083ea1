// Package cliflag holds flag.Value types the commands share.
package cliflag

import "strings"

// StringList is a repeatable, comma-splitting string list flag. Its first
// use replaces the default, so --x= empties the list.
type StringList struct {
	Dst *[]string
	set bool
}

func (l *StringList) String() string {
	if l == nil || l.Dst == nil {
		return ""
	}
	return strings.Join(*l.Dst, ",")
}

// Set adds the comma-separated values of one use of the flag.
func (l *StringList) Set(v string) error {
	if !l.set {
		*l.Dst, l.set = []string{}, true
	}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l.Dst = append(*l.Dst, s)
		}
	}
	return nil
}
