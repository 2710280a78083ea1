package cliflag

import (
	"flag"
	"reflect"
	"testing"
)

func TestStringList(t *testing.T) {
	list := []string{"default"}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Var(&StringList{Dst: &list}, "x", "")
	if err := fs.Parse([]string{"--x=a,b", "--x", " c ", "--x="}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(list, []string{"a", "b", "c"}) {
		t.Fatalf("list = %q", list)
	}
	empty := []string{"default"}
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Var(&StringList{Dst: &empty}, "x", "")
	fs.Parse([]string{"--x="})
	if len(empty) != 0 {
		t.Fatalf("--x= left %q", empty)
	}
}
