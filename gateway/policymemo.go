package gateway

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"reflect"
	"slices"
	"strconv"
)

// policyMemoKey is the key of a policy check for the file at base: the
// file's identity and everything frag holds, followed through every
// pointer and interface, maps in key order. fmt's %#v prints a nested
// pointer as its address, which would key a rotated Secret's keys (behind
// *routes.APIKey) by where they sit in memory, not by what they are.
func policyMemoKey(base any, frag any) [32]byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%p\x00", base)
	deepWrite(&b, reflect.ValueOf(frag), 0)
	return sha256.Sum256(b.Bytes())
}

// deepWrite writes v unambiguously: each value's kind, and each length
// before the elements, so that no two different values write the same
// bytes. Past a depth no model reaches (a cyclic value), it writes a
// marker; such a key only misses the memo. It appends rather than
// formats: a policy applied to thousands of routes is keyed on every
// snapshot, endpoint changes included.
func deepWrite(b *bytes.Buffer, v reflect.Value, depth int) {
	if depth > 64 {
		b.WriteString("deep\x00")
		return
	}
	if !v.IsValid() {
		b.WriteString("invalid\x00")
		return
	}
	var num [24]byte
	writeInt := func(n int64) { b.Write(strconv.AppendInt(num[:0], n, 10)) }
	writeInt(int64(v.Kind()))
	b.WriteByte(':')
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			b.WriteString("nil\x00")
			return
		}
		deepWrite(b, v.Elem(), depth+1)
	case reflect.Struct:
		b.WriteString(v.Type().String())
		b.WriteByte('{')
		for i := range v.NumField() {
			deepWrite(b, v.Field(i), depth+1)
		}
		b.WriteString("}")
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			b.WriteString("nil\x00")
			return
		}
		writeInt(int64(v.Len()))
		b.WriteByte('[')
		if v.Type().Elem().Kind() == reflect.Uint8 && v.Kind() == reflect.Slice {
			b.Write(v.Bytes())
		} else {
			for i := range v.Len() {
				deepWrite(b, v.Index(i), depth+1)
			}
		}
		b.WriteString("]")
	case reflect.Map:
		if v.IsNil() {
			b.WriteString("nil\x00")
			return
		}
		// Each entry written alone, then sorted: map order is random.
		entries := make([][]byte, 0, v.Len())
		for it := v.MapRange(); it.Next(); {
			var e bytes.Buffer
			deepWrite(&e, it.Key(), depth+1)
			deepWrite(&e, it.Value(), depth+1)
			entries = append(entries, e.Bytes())
		}
		slices.SortFunc(entries, bytes.Compare)
		writeInt(int64(len(entries)))
		b.WriteByte('{')
		for _, e := range entries {
			writeInt(int64(len(e)))
			b.WriteByte(':')
			b.Write(e)
		}
		b.WriteString("}")
	case reflect.String:
		writeInt(int64(v.Len()))
		b.WriteByte(':')
		b.WriteString(v.String())
	case reflect.Bool:
		b.WriteString(strconv.FormatBool(v.Bool()))
		b.WriteByte(0)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		writeInt(v.Int())
		b.WriteByte(0)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		b.Write(strconv.AppendUint(num[:0], v.Uint(), 10))
		b.WriteByte(0)
	case reflect.Float32, reflect.Float64:
		fmt.Fprintf(b, "%v\x00", v.Float())
	default:
		// Funcs, channels, complex numbers: not part of a model; their
		// type alone.
		b.WriteString(v.Type().String())
		b.WriteByte(0)
	}
}
