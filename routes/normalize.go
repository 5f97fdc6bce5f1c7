package routes

// Normalize applies the defaults and then validates f: what Parse does once
// a file is decoded. A File built in code (the sidecar's inbound and
// outbound runtimes are described as routes files) goes through it to get
// the same defaults and checks as a file a user wrote, without a round trip
// through YAML.
func (f *File) Normalize() error {
	f.applyDefaults()
	if errs := f.validate(doubts{}); len(errs) > 0 {
		return errs
	}
	return nil
}
