// C API
