// The Python extension module kernelzoo._C. It exposes nothing: importing it
// loads the shared library, whose static initializers register the operators
// with PyTorch's dispatcher (torch.ops.kernelzoo.*).
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",
      "kernelzoo's compiled operators; loading this module registers them.",
      -1,
      nullptr,
  };
  return PyModule_Create(&module_def);
}
}
