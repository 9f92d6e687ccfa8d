package etcdstore

// StopWatch stops s's watch of its prefix (the read cache then learns of
// other nodes' writes only from their guards failing).
func StopWatch(s *Store) {
	s.stopWatch()
	s.watching.Wait()
}
