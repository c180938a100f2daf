"""graph_mnist: the MNIST networks of "TensorFlow and Deep Learning without a PhD"."""

from setuptools import find_packages, setup

SERVE = ['starlette', 'uvicorn', 'uvloop', 'httptools', 'orjson', 'prometheus-client']

setup(
    name='graph_mnist',
    version='0.1.0',
    description="The talk's seven MNIST networks in TensorFlow 1 graph code, running today",
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['graph_mnist', 'graph_mnist.*']),
    package_data={'graph_mnist': ['static/*.html']},  # the drawing page of graph_mnist.serve
    install_requires=[
        'tensorflow>=2.16',  # tf.compat.v1 graphs and Sessions, Keras 3 era
        'numpy',
        'absl-py',
        'matplotlib',  # the dashboard and the comparison plots
        'tensorboard',  # event files; no longer a dependency of tensorflow since 2.20
        'pillow',  # predict reads PNG and JPEG; the dashboard writes GIFs
        # TensorFlow Serving's protos (30 kB; its grpcio and protobuf come with tensorflow):
        # export writes TF Serving's warm-up file with them, serve answers gRPC with them
        'tensorflow-serving-api',
    ],
    extras_require={
        # train on an NVIDIA GPU: TensorFlow with its CUDA libraries (several GB; Linux)
        'gpu': ['tensorflow[and-cuda]'],
        # open the notebooks: JupyterLab and a kernel
        'notebook': ['jupyterlab', 'ipykernel'],
        # serve with TensorFlow Serving's APIs: REST on Starlette and uvicorn (uvloop,
        # httptools: its fast event loop and HTTP parser), orjson to parse the requests'
        # JSON; prometheus-client adds up the metrics of the serving processes
        'serve': SERVE,
        # run the tests: pytest; a real kernel and papermill to execute the notebooks; the
        # server's stack, and selenium to drive Debian's chromium on the drawing page
        'test': ['pytest', 'ipykernel', 'papermill', 'selenium', *SERVE],
    },
)
